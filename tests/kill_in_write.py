"""``python tests/kill_in_write.py MODULE [ARGS ...]``: run ``MODULE.main(ARGS)`` (e.g. ``yolov3.cli.train``) in this
process, and with ``YOLOV3_TEST_KILL_IN_WRITE=N`` SIGKILL it inside its Nth atomic file write.

The kill lands where a ``kill -9`` during a checkpoint write would: the temporary file beside the target holds
only part of what was written, it is neither fsynced nor renamed, and the target still holds the previous
version. A test-only wrapper (:mod:`tests.test_kill_resume`): the library has no hook for it.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

KILL_IN_WRITE = "YOLOV3_TEST_KILL_IN_WRITE"


def install(kill_at: int) -> None:
    """Replace ``yolov3.atomic.atomic_output`` before anything imports it by name."""
    import yolov3.atomic

    original = yolov3.atomic.atomic_output
    calls = 0

    @contextlib.contextmanager
    def killing_output(path: str | os.PathLike) -> Iterator[Path]:
        nonlocal calls
        calls += 1
        with original(path) as temporary:
            yield temporary
            if calls == kill_at:
                written = temporary.stat().st_size
                with open(temporary, "r+b") as file:
                    file.truncate(written // 2)  # part of the file reached the disk
                os.kill(os.getpid(), signal.SIGKILL)

    yolov3.atomic.atomic_output = killing_output


def main() -> int:
    kill_at = int(os.environ.get(KILL_IN_WRITE, "0"))
    if kill_at > 0:
        install(kill_at)
    module = importlib.import_module(sys.argv[1])
    return module.main(sys.argv[2:])


if __name__ == "__main__":
    raise SystemExit(main())
