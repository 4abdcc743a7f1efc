"""The command-line tools, one module per command; each has ``main(argv=None)`` (which the tests call).

``python -m yolov3.<name>`` runs them through thin entry points (``yolov3/detect.py``, ``yolov3/data/show.py``,
...) that only import ``main`` from here. Every tool parses its arguments and calls library functions, and
reports errors through :mod:`yolov3.cli.runner`. Nothing is imported here: ``python -m yolov3.weights --help``
does not pay for torch.
"""
