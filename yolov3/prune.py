"""``python -m yolov3.prune``: see :mod:`yolov3.cli.prune`."""

from yolov3.cli.prune import main

if __name__ == "__main__":
    raise SystemExit(main())
