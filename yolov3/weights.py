"""``python -m yolov3.weights``: see :mod:`yolov3.cli.weights`."""

from yolov3.cli.weights import main

if __name__ == "__main__":
    raise SystemExit(main())
