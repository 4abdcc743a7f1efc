"""``python -m yolov3.anchors``: see :mod:`yolov3.cli.anchors`."""

from yolov3.cli.anchors import main

if __name__ == "__main__":
    raise SystemExit(main())
