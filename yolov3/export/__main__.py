"""``python -m yolov3.export``: see :mod:`yolov3.cli.export`."""

from yolov3.cli.export import main

if __name__ == "__main__":
    raise SystemExit(main())
