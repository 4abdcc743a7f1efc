"""``python -m yolov3.summary``: see :mod:`yolov3.cli.summary`."""

from yolov3.cli.summary import main

if __name__ == "__main__":
    raise SystemExit(main())
