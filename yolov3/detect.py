"""``python -m yolov3.detect``: see :mod:`yolov3.cli.detect`."""

from yolov3.cli.detect import main

if __name__ == "__main__":
    raise SystemExit(main())
