"""``python -m yolov3.darknet.write_cfg``: see :mod:`yolov3.cli.write_cfg` (a native model as a Darknet cfg)."""

from yolov3.cli.write_cfg import main

if __name__ == "__main__":
    raise SystemExit(main())
