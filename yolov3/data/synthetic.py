"""``python -m yolov3.data.synthetic``: see :mod:`yolov3.cli.synthetic` (the library code is
:mod:`yolov3.data.shapes_dataset`)."""

from yolov3.cli.synthetic import main

if __name__ == "__main__":
    raise SystemExit(main())
