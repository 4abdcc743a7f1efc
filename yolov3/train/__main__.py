"""``python -m yolov3.train``: see :mod:`yolov3.cli.train`."""

from yolov3.cli.train import main

if __name__ == "__main__":
    raise SystemExit(main())
