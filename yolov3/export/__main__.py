"""``python -m yolov3.export``: see :mod:`yolov3.export.cli`."""

from yolov3.export.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
