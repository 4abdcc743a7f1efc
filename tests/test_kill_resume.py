"""kill -9 fault injection: a training run SIGKILLed at 20+ random moments and resumed each time ends equal to an
uninterrupted run (weights within 1e-6, the same best.pt epoch).

The kills are timed in the child's CPU seconds (``/proc/<pid>/stat``) against the uninterrupted run's timeline,
so they land at the same places on an idle and on a loaded machine: during start-up (before the first
``last.pt``, where ``--resume`` starts the run afresh), inside training epochs, and — through
``tests/kill_in_write.py`` — inside an atomic write of ``args.yaml``, ``best.pt`` or ``last.pt``. Every launch
must either be killed by the test or finish (exit 0): none may fail to start.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from kill_in_write import KILL_IN_WRITE
from test_train import tiny_config

from yolov3.checkpoint import Checkpoint, ModelSpec, load_checkpoint, save_checkpoint
from yolov3.cli import train as cli

ROOT = Path(__file__).resolve().parents[1]
KILLS = 20
EPOCHS = 8
TRAINING_STARTS = b"INFO yolov3.train.trainer: precision:"  # logged once data, model and optimizer are built
LAUNCH_TIMEOUT_S = 1800  # wall clock, a fallback only: a busy machine runs these processes many times slower


@dataclass
class Kill:
    mode: str  # startup, train, or write N (killed inside the launch's Nth atomic write)
    epochs_before: int  # completed epochs (in last.pt) when the launch started
    epochs_after: int

    def __str__(self) -> str:
        return f"{self.mode}@{self.epochs_before}->{self.epochs_after}"


def write_run_config(folder: Path) -> Path:
    """tiny_config (its mAP rises for a few epochs: best.pt is rewritten) with its own synthetic data and logs."""
    overrides = {"train.epochs": EPOCHS, "logging.images_every_epochs": 0, "logging.histograms_every_epochs": 0}
    folder.mkdir(parents=True)
    path = folder / "cfg.yaml"
    path.write_text(yaml.safe_dump(tiny_config(folder, **overrides)))
    return path


def environment(kill_in_write: int = 0) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != KILL_IN_WRITE}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    if kill_in_write:
        env[KILL_IN_WRITE] = str(kill_in_write)
    return env


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a live process; None once it has gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Launch:
    status: int
    training_cpu: float | None  # CPU seconds when training started (the trainer's "precision:" line)
    epoch_cpu: list[float]  # CPU seconds when the watched checkpoint gained epoch 1, 2, ...


def run(command: list[str], env: dict[str, str], log: Path, kill_at_cpu: float | None = None,
        kill_in_training: float | None = None, watch: Path | None = None) -> Launch:  # fmt: skip
    """Run ``command``, SIGKILLing it once it has used ``kill_at_cpu`` CPU seconds, or ``kill_in_training`` CPU
    seconds after it started training."""
    offset = log.stat().st_size if log.is_file() else 0
    with log.open("a") as output:
        output.write(f"$ {' '.join(command)}\n")
        output.flush()
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)
    deadline, cpu, training, marks, stamp = time.monotonic() + LAUNCH_TIMEOUT_S, 0.0, None, [], None
    while process.poll() is None:
        cpu = cpu_seconds(process.pid) or cpu
        if training is None:
            with log.open("rb") as text:
                text.seek(offset)
                training = cpu if TRAINING_STARTS in text.read() else None
        if watch is not None and watch.is_file() and watch.stat().st_mtime_ns != stamp:
            stamp = watch.stat().st_mtime_ns
            epoch = load_checkpoint(watch).epoch
            marks.extend([cpu] * (epoch + 1 - len(marks)))  # a missed poll counts both epochs as done now
        if (kill_at_cpu is not None and cpu >= kill_at_cpu) or (
            kill_in_training is not None and training is not None and cpu >= training + kill_in_training
        ):
            process.kill()
            break
        if time.monotonic() > deadline:
            process.kill()
            process.wait()
            pytest.fail(f"{' '.join(command)} still ran after {LAUNCH_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.02)
    return Launch(process.wait(), training, marks)


def completed_epochs(run_dir: Path) -> int:
    """Epochs in ``last.pt``, checking what a kill may leave: both checkpoints readable (replaced atomically only),
    and ``best.pt`` never behind ``last.pt`` (it is written first, so a kill between the two writes loses nothing)."""
    if not (run_dir / "last.pt").is_file():
        return 0
    last = load_checkpoint(run_dir / "last.pt")
    assert (run_dir / "best.pt").is_file(), f"last.pt holds epoch {last.epoch + 1}, but there is no best.pt"
    best = load_checkpoint(run_dir / "best.pt")
    assert best.best_map50 >= last.best_map50, f"best.pt (epoch {best.epoch + 1}) is behind last.pt"
    return last.epoch + 1


def assert_same_checkpoint(resumed: Checkpoint, expected: Checkpoint, name: str) -> None:
    assert resumed.epoch == expected.epoch, f"{name}: epoch {resumed.epoch} != {expected.epoch}"
    assert resumed.best_map50 == pytest.approx(expected.best_map50, abs=1e-9), name
    assert [h["mAP50"] for h in resumed.history] == pytest.approx([h["mAP50"] for h in expected.history])
    for key in ("model_state", "ema_state"):
        assert getattr(resumed, key).keys() == getattr(expected, key).keys()
        for tensor, value in getattr(expected, key).items():
            torch.testing.assert_close(
                getattr(resumed, key)[tensor], value, rtol=0, atol=1e-6, msg=f"{name} {key}.{tensor}"
            )


def improvements(history: list[dict[str, float]]) -> list[bool]:
    """Which epochs raised the best mAP@0.5 (and so wrote best.pt before last.pt)."""
    best, improved = -1.0, []
    for metrics in history:
        improved.append(metrics["mAP50"] > best)
        best = max(best, metrics["mAP50"])
    return improved


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads CPU times from /proc")
def test_twenty_kill_9s_and_resumes_end_equal_to_an_uninterrupted_run(tmp_path: Path) -> None:
    reference_config = write_run_config(tmp_path / "reference")
    reference = tmp_path / "reference" / "logs" / "run"
    launch = run([sys.executable, "-m", "yolov3.train", "--no-progress", "--cfg", str(reference_config)],
                 environment(), tmp_path / "reference.log", watch=reference / "last.pt")  # fmt: skip
    assert launch.status == 0, (tmp_path / "reference.log").read_text()[-3000:]
    assert launch.training_cpu is not None and len(launch.epoch_cpu) == EPOCHS, launch
    startup_cpu = launch.training_cpu
    timeline = (range(EPOCHS + 1), [0.0] + [cpu - startup_cpu for cpu in launch.epoch_cpu])  # epochs -> CPU seconds
    improved = improvements(load_checkpoint(reference / "last.pt").history)

    killed_config = write_run_config(tmp_path / "killed")
    killed = tmp_path / "killed" / "logs" / "run"
    log = tmp_path / "killed.log"
    launcher = [sys.executable, str(ROOT / "tests" / "kill_in_write.py"), "yolov3.cli.train", "--no-progress"]
    rng = random.Random(15)
    # Where the kills land, in epochs of training (sorted: the run moves on as they do), and how.
    points = sorted(rng.uniform(0.0, EPOCHS) for _ in range(KILLS))
    modes = ["write"] + [rng.choice(("startup", "train", "train", "train", "write")) for _ in range(KILLS - 1)]
    kills: list[Kill] = []
    finished_early, partial_files = 0, 0
    while len(kills) < KILLS:
        assert len(kills) + finished_early < 2 * KILLS, "the killed run makes no progress"
        point, mode = points[len(kills)], modes[len(kills)]
        before = completed_epochs(killed)
        target = min(max(int(point), before), EPOCHS - 1)  # the epoch to kill in
        kill_at_cpu, kill_in_training, kill_in_write = None, None, 0
        if before == EPOCHS or mode == "startup":  # a finished run's resume, too, must start
            mode, kill_at_cpu = "startup", startup_cpu * rng.uniform(0.1, 1.0)
        elif mode == "train":
            progress = point if point >= before else before + point % 1.0
            kill_in_training = float(np.interp(progress, *timeline) - np.interp(before, *timeline))
        elif not kills:  # a fresh run writes args.yaml, best.pt (epoch 1 always improves), last.pt: the resume
            kill_in_write = 3  # of a run killed between best.pt and last.pt must start afresh
        else:  # args.yaml, then best.pt (when improved) and last.pt every epoch
            writes = sum(1 + improved[epoch] for epoch in range(before, target))
            kill_in_write = 1 + writes + rng.randint(1, 1 + improved[target])
        if kill_in_write:
            mode = f"write {kill_in_write}"
        start = ["--resume", str(killed)] if (killed / "args.yaml").is_file() else ["--cfg", str(killed_config)]
        status = run([*launcher, *start], environment(kill_in_write), log, kill_at_cpu, kill_in_training).status
        if status == 0 and not kill_in_write:
            finished_early += 1  # the run (or its resume of a finished run) ended before the kill: allowed
            continue
        number = len(kills) + finished_early + 1
        assert status == -9, f"launch {number} ({mode}) exited {status}:\n" + log.read_text()[-4000:]
        kills.append(Kill(mode, before, completed_epochs(killed)))
        partial_files += bool(list(killed.glob(".*.tmp")))  # a killed write's temporary (removed at the next start)

    start = ["--resume", str(killed)] if (killed / "args.yaml").is_file() else ["--cfg", str(killed_config)]
    assert run([*launcher, *start], environment(), log).status == 0, log.read_text()[-4000:]

    summary = ", ".join(map(str, kills))
    assert not list(killed.glob(".*.tmp")), "the resumed run did not remove the partial files of killed writes"
    cpu = ", ".join(f"{value:.1f}" for value in [startup_cpu, *launch.epoch_cpu])
    print(f"\n{len(kills)} kills ({partial_files} left a partial temporary file), {finished_early} runs ended first")
    print(
        f"kills (mode@epochs before->after): {summary}\nreference CPU seconds at training start, epoch 1, 2...: {cpu}"
    )
    assert sum(kill.mode.startswith("write") for kill in kills) >= 2, summary
    assert len({kill.epochs_before for kill in kills}) >= EPOCHS // 2, f"kills did not spread over the run: {summary}"
    for name in ("last.pt", "best.pt"):
        assert_same_checkpoint(load_checkpoint(killed / name), load_checkpoint(reference / name), name)


def test_resume_of_a_run_killed_before_it_wrote_args_yaml_says_to_start_it_with_cfg(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "logs" / "run"
    run_dir.mkdir(parents=True)  # what a kill between the folder and its args.yaml leaves
    assert cli.main(["--resume", str(run_dir), "--no-progress"]) == 2
    error = capsys.readouterr().err
    assert error.strip() == (
        f"error: {run_dir / 'args.yaml'}: not found: {run_dir} is not a run folder, or its run was stopped before "
        "it wrote its config; start the run with --cfg"
    )


PRUNE_EPOCHS = 4
PRUNE_KILLS = 5


def write_dense_checkpoint(path: Path) -> Path:
    """A ``best.pt`` of yolov3_tiny_test for the synthetic shapes (its initialization: pruning needs no training)."""
    torch.manual_seed(0)
    spec = ModelSpec("yolov3_tiny_test", {"num_classes": 3})
    save_checkpoint(path, Checkpoint(spec, spec.build().state_dict(), class_names=("circle", "square", "triangle")))
    return path


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads CPU times from /proc")
def test_prune_fine_tuning_killed_and_resumed_ends_equal_to_an_uninterrupted_run(tmp_path: Path) -> None:
    """``python -m yolov3.prune oneshot`` SIGKILLed at random moments (inside its fine-tuning epochs and inside
    atomic writes: prune.json, best.pt, last.pt), each time continued with ``--resume``: the fine-tuned ``last.pt``
    and the ``pruned.pt`` it writes equal an uninterrupted run's."""
    config, weights = write_run_config(tmp_path / "inputs"), write_dense_checkpoint(tmp_path / "dense.pt")

    def command(out: Path) -> list[str]:
        return ["yolov3.prune", "oneshot", "--weights", str(weights), "--cfg", str(config), "--target", "0.5",
                "--finetune-epochs", str(PRUNE_EPOCHS), "--out", str(out), "--no-progress"]  # fmt: skip

    reference = tmp_path / "reference"
    launcher = [sys.executable, str(ROOT / "tests" / "kill_in_write.py")]
    launch = run(
        [*launcher, *command(reference)], environment(), tmp_path / "reference.log", watch=reference / "last.pt"
    )
    assert launch.status == 0, (tmp_path / "reference.log").read_text()[-3000:]
    assert launch.training_cpu is not None and len(launch.epoch_cpu) == PRUNE_EPOCHS, launch
    timeline = (range(PRUNE_EPOCHS + 1), [0.0] + [cpu - launch.training_cpu for cpu in launch.epoch_cpu])

    killed, log = tmp_path / "killed", tmp_path / "killed.log"
    rng = random.Random(13)
    modes = ["write", "train", *(rng.choice(("train", "train", "write")) for _ in range(PRUNE_KILLS - 2))]
    kills: list[Kill] = []
    for mode in modes:
        before = completed_epochs(killed)
        kill_in_training, kill_in_write = None, 0
        if mode == "train":  # somewhere in what is left of the fine-tuning
            left = float(np.interp(PRUNE_EPOCHS, *timeline) - np.interp(before, *timeline))
            kill_in_training = left * rng.uniform(0.1, 0.9)
        else:  # the first launch writes prune.json first; any launch then best.pt / last.pt of its first epoch
            kill_in_write = rng.randint(1, 2)
        resume = ["--resume"] if (killed / "prune.json").is_file() else []
        status = run([*launcher, *command(killed), *resume], environment(kill_in_write), log, None,
                     kill_in_training).status  # fmt: skip
        if status == 0:
            break  # the run finished before the kill (allowed; the kills before it still count)
        assert status == -9, f"launch {len(kills) + 1} ({mode}) exited {status}:\n" + log.read_text()[-4000:]
        kills.append(Kill(f"write {kill_in_write}" if kill_in_write else mode, before, completed_epochs(killed)))
    else:
        status = run([*launcher, *command(killed), "--resume"], environment(), log).status
        assert status == 0, log.read_text()[-4000:]

    summary = ", ".join(map(str, kills))
    print(f"\nprune fine-tuning: {len(kills)} kills (mode@epochs before->after): {summary}")
    assert len(kills) >= 3 and any(kill.mode.startswith("write") for kill in kills), summary
    assert not list(killed.glob(".*.tmp")), "the resumed run did not remove the partial files of killed writes"
    assert_same_checkpoint(load_checkpoint(killed / "last.pt"), load_checkpoint(reference / "last.pt"), "last.pt")
    pruned, expected = load_checkpoint(killed / "pruned.pt"), load_checkpoint(reference / "pruned.pt")
    assert pruned.pruning == expected.pruning and pruned.optimizer is None  # a plain (inference) checkpoint
    for key in ("model_state", "ema_state"):
        for tensor, value in getattr(expected, key).items():
            torch.testing.assert_close(getattr(pruned, key)[tensor], value, rtol=0, atol=1e-6, msg=f"pruned.pt {key}")
    assert (killed / "prune.csv").read_text() == (reference / "prune.csv").read_text()
