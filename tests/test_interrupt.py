"""SIGINT / SIGTERM during training: stop at a safe point, keep last.pt, one line saying how to resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from block_in_step import IN_STEP
from test_train import write_config

from yolov3.checkpoint import load_checkpoint
from yolov3.train.interrupt import InterruptHandler, TrainingInterruptedError

ROOT = Path(__file__).resolve().parents[1]


def test_first_signal_sets_a_flag_and_handlers_are_restored() -> None:
    before = signal.getsignal(signal.SIGINT)
    with InterruptHandler() as handler:
        handler.check()  # nothing yet
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        with pytest.raises(TrainingInterruptedError, match="SIGTERM") as caught:
            handler.on_optimizer_step(None, 1)
        assert caught.value.signal_number == signal.SIGTERM
    assert signal.getsignal(signal.SIGINT) is before


def start_training(tmp_path: Path, epochs: int) -> tuple[subprocess.Popen, Path]:
    config = write_config(tmp_path, **{"train.epochs": epochs, "data.augment": {}})
    process = subprocess.Popen(
        [sys.executable, "-m", "yolov3.train", "--cfg", str(config), "--no-progress"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return process, tmp_path / "logs" / "run"


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.is_file():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM])
def test_signal_keeps_last_pt_and_says_how_to_resume(tmp_path: Path, number: int) -> None:
    process, run = start_training(tmp_path, epochs=50)
    wait_for(run / "last.pt", process)
    process.send_signal(number)
    _, error = process.communicate(timeout=60)
    assert process.returncode == 128 + number
    assert f"resume with: python -m yolov3.train --resume {run}" in error
    assert "Traceback" not in error
    epoch = load_checkpoint(run / "last.pt").epoch
    assert 0 <= epoch < 49  # a completed epoch, and training did stop early


def wait_for_line(process: subprocess.Popen, text: str, timeout: float = 120) -> list[str]:
    """Read the child's stderr until a line holds ``text``; the lines read so far (the rest stays in the pipe)."""
    lines: list[str] = []
    found = threading.Event()

    def read() -> None:
        for line in process.stderr:
            lines.append(line)
            if text in line:
                found.set()
                return

    threading.Thread(target=read, daemon=True).start()
    assert found.wait(timeout), f"{text!r} never appeared in the child's stderr:\n{''.join(lines)[-2000:]}"
    return lines


@pytest.mark.slow
def test_second_sigint_exits_at_once(tmp_path: Path) -> None:
    """Both signals land during training: ``tests/block_in_step.py`` holds the trainer inside its first optimizer
    step (the first SIGINT's stop flag is only read when a step ends), so only the second SIGINT can end it."""
    config = write_config(tmp_path, **{"train.epochs": 50, "data.augment": {}})
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "block_in_step.py"), "yolov3.cli.train", "--cfg", str(config),
         "--no-progress"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        wait_for_line(process, IN_STEP, timeout=600)  # start-up: minutes on a loaded machine
        process.send_signal(signal.SIGINT)
        wait_for_line(process, "SIGINT: stopping after the current step")  # the first one is handled ...
        assert process.poll() is None  # ... and training goes on: it is still inside the step
        started = time.monotonic()
        process.send_signal(signal.SIGINT)
        _, error = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 128 + signal.SIGINT and "SIGINT again: exiting now" in error
    assert time.monotonic() - started < 5
    assert not (tmp_path / "logs" / "run" / "last.pt").exists()  # it stopped inside the first epoch
