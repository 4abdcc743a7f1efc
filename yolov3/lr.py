"""``python -m yolov3.lr``: see :mod:`yolov3.cli.lr`."""

from yolov3.cli.lr import main

if __name__ == "__main__":
    raise SystemExit(main())
