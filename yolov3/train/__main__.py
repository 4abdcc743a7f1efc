"""``python -m yolov3.train``: see :mod:`yolov3.train.cli`."""

from yolov3.train.cli import main

raise SystemExit(main())
