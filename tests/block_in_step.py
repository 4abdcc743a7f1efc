"""``python tests/block_in_step.py MODULE [ARGS ...]``: run ``MODULE.main(ARGS)`` (e.g. ``yolov3.cli.train``) in this
process with its first optimizer step made endless, so that signals reliably land *during* training.

After the step, the interrupt handler's hook writes :data:`IN_STEP` to stderr and then sleeps in a loop instead
of returning: training stays inside that step until a signal handler ends the process (a second SIGINT exits at
once; the first only sets the stop flag, which is checked when the step returns — never). A test-only wrapper
(:mod:`tests.test_interrupt`): the library has no hook for it.
"""

from __future__ import annotations

import importlib
import sys
import time
from typing import Any

IN_STEP = "block_in_step: training is inside an optimizer step"


def install() -> None:
    """Replace the interrupt handler's per-step check with a step that never ends."""
    from yolov3.train.interrupt import InterruptHandler

    def endless_step(self: InterruptHandler, context: Any, step: int) -> None:
        sys.stderr.write(f"{IN_STEP} ({step})\n")
        sys.stderr.flush()
        while True:  # signal handlers run between these sleeps
            time.sleep(0.01)

    InterruptHandler.on_optimizer_step = endless_step  # type: ignore[method-assign]


def main() -> int:
    install()
    module = importlib.import_module(sys.argv[1])
    return module.main(sys.argv[2:])


if __name__ == "__main__":
    raise SystemExit(main())
