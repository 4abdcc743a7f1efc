"""Ctrl-C and SIGTERM during training: stop at a safe point, keep ``last.pt``, say how to resume.

:class:`InterruptHandler` is a context manager (it installs SIGINT / SIGTERM handlers on entry and restores
the previous ones on exit; nothing changes at import) and a :class:`~yolov3.train.callbacks.TrainerCallback`.
The first signal only sets a flag; the trainer stops at the next safe point (after the current optimizer
step, or before the next epoch), raising :class:`TrainingInterruptedError`. ``last.pt`` then holds the last
completed epoch (checkpoints are written atomically at each epoch end, so a stop can never leave a partial
one), and ``--resume`` continues from it exactly. A second signal exits the process at once.
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType
from typing import Any

from yolov3.train.callbacks import TrainerCallback, TrainingContext

HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterruptedError(Exception):
    """Training stopped at a safe point because of a signal; ``signal_number`` tells which."""

    def __init__(self, signal_number: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signal_number).name}")
        self.signal_number = signal_number


def report_interruption(stop: TrainingInterruptedError, how_to_continue: str) -> int:
    """Print ``"<what stopped the run>: <how_to_continue>"`` on stderr; returns the exit status (128 + signal)."""
    print(f"{stop}: {how_to_continue}", file=sys.stderr)
    return 128 + stop.signal_number


class InterruptHandler(TrainerCallback):
    """First SIGINT / SIGTERM: stop at the next safe point; second: exit at once (status 128 + signal)."""

    def __init__(self) -> None:
        self.requested: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> InterruptHandler:
        for number in HANDLED_SIGNALS:
            self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for number, previous in self._previous.items():
            signal.signal(number, previous)
        self._previous.clear()

    def _handle(self, number: int, frame: FrameType | None) -> None:
        if self.requested is not None:
            sys.stderr.write(f"\n{signal.Signals(number).name} again: exiting now\n")
            sys.stderr.flush()
            os._exit(128 + number)
        self.requested = number
        sys.stderr.write(f"\n{signal.Signals(number).name}: stopping after the current step (again to exit at once)\n")
        sys.stderr.flush()

    def check(self) -> None:
        """Raise :class:`TrainingInterruptedError` if a signal arrived."""
        if self.requested is not None:
            raise TrainingInterruptedError(self.requested)

    def on_epoch_start(self, context: TrainingContext, epoch: int) -> None:
        self.check()

    def on_optimizer_step(self, context: TrainingContext, step: int) -> None:
        self.check()
