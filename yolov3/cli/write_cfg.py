"""``python -m yolov3.darknet.write_cfg``: a native model as a Darknet ``.cfg`` (:mod:`yolov3.export.darknet_cfg`).

The argument parsing still lives in :func:`yolov3.export.darknet_cfg.main` (moved there from ``darknet/`` by its
owner); this module runs it under the shared runner. Moving the parser here leaves ``darknet_cfg`` the library.
"""

from __future__ import annotations

from collections.abc import Sequence

from yolov3.cli.runner import command, configure_logging
from yolov3.export import darknet_cfg


@command
def main(argv: Sequence[str] | None = None) -> int:
    configure_logging()
    return darknet_cfg.main(None if argv is None else list(argv))
