"""``python -m yolov3.compress``: see :mod:`yolov3.cli.compress`."""

from yolov3.cli.compress import main

if __name__ == "__main__":
    raise SystemExit(main())
