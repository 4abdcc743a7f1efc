"""``python -m yolov3.evaluate``: see :mod:`yolov3.cli.evaluate`."""

from yolov3.cli.evaluate import main

if __name__ == "__main__":
    raise SystemExit(main())
