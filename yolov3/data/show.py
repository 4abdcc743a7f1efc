"""``python -m yolov3.data.show``: see :mod:`yolov3.cli.show` (the library code is :mod:`yolov3.data.inspection`)."""

from yolov3.cli.show import main

if __name__ == "__main__":
    raise SystemExit(main())
