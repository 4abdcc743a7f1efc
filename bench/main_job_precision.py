"""A whole training run under ``train.amp: auto`` + ``channels_last`` against plain fp32, side by side.

Runs ``python -m yolov3.train --cfg CFG`` once per precision, one after the other, each in a fresh process,
with the same config, seed and ``--set`` overrides; only the precision differs:

- ``auto``: the config's defaults, ``train.amp: auto`` (bf16 autocast on a CPU with AVX512-BF16 or AMX) and
  ``train.channels_last: true``;
- ``fp32``: ``train.amp=none`` and ``train.channels_last=false``.

For each it reports the wall-clock of the whole command (dataset scan, training, validation, checkpoints),
the best validation mAP@0.5 and the validation curve from ``best.pt``/``last.pt``, and the time at which
the run first reached the fp32 run's best mAP@0.5 less one point (the issue's bar: the same mAP within one
point in at most 60% of the time).

Usage::

    python bench/main_job_precision.py                                  # configs/shapes.yaml
    python bench/main_job_precision.py --record                         # and write docs/benchmarks.md
    python bench/main_job_precision.py --set train.epochs=2 --set data.synthetic.num_train=64   # a smoke run
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from common import command_line, cpu_name
from docs_section import record_section
from yolov3.checkpoint import load_checkpoint
from yolov3.hardware import resolve_amp

SECTION = "## Main job: `train.amp: auto` + channels_last vs fp32 (issue 12)"
ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"
PRECISIONS = {
    "auto": ["train.amp=auto", "train.channels_last=true"],
    "fp32": ["train.amp=none", "train.channels_last=false"],
}


def run_training(cfg: Path, overrides: list[str], run_name: str, log_dir: Path) -> dict:
    """Train in a fresh process; return its wall-clock seconds, best mAP@0.5 and validation history."""
    command = [sys.executable, "-m", "yolov3.train", "--cfg", str(cfg), "--no-progress"]
    for override in [*overrides, f"logging.log_dir={log_dir}", f"logging.run_name={run_name}"]:
        command += ["--set", override]
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT)
    seconds = time.perf_counter() - started
    run_dir = log_dir / run_name
    last = load_checkpoint(run_dir / "last.pt")
    curve = [(int(entry["epoch"]), float(entry["mAP50"])) for entry in last.history or [] if "mAP50" in entry]
    return {"seconds": seconds, "best_map50": float(last.best_map50 or 0.0), "curve": curve, "amp": last.amp}


def first_time_at(result: dict, target: float) -> float | None:
    """Seconds at which ``result``'s validation first reached ``target`` (epochs assumed evenly timed)."""
    epochs = max(epoch for epoch, _ in result["curve"])
    for epoch, value in result["curve"]:
        if value >= target:
            return result["seconds"] * epoch / epochs
    return None


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cfg", type=Path, default=Path("configs/shapes.yaml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override applied to both runs (repeatable)")  # fmt: skip
    parser.add_argument("--log-dir", type=Path, default=Path("logs"))
    parser.add_argument("--record", action="store_true", help=f"write the report into {DOCS.name}")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    load_before = os.getloadavg()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    results = {}
    for name, precision in PRECISIONS.items():
        print(f"=== {name}: {' '.join(precision)}", flush=True)
        run_name = f"main_job_precision-{name}-{stamp}"
        results[name] = run_training(arguments.cfg, [*arguments.overrides, *precision], run_name, arguments.log_dir)
    load_after = os.getloadavg()
    reference = results["fp32"]
    target = reference["best_map50"] - 0.01
    choice = resolve_amp("auto", "cpu")
    rows = []
    for name, result in results.items():
        reached = first_time_at(result, target)
        rows.append(
            f"| {name} ({result['amp']['mode'] if result['amp'] else '?'}) | {result['seconds'] / 60:.1f} | "
            f"{result['seconds'] / reference['seconds']:.2f} | {result['best_map50']:.4f} | "
            f"{result['best_map50'] - reference['best_map50']:+.4f} | "
            + ("-" if reached is None else f"{reached / 60:.1f} ({reached / reference['seconds']:.2f}x)")
            + " |"
        )
    epochs = sorted({epoch for result in results.values() for epoch, _ in result["curve"]})
    curve_rows = [
        f"| {name} | " + " | ".join(f"{dict(result['curve']).get(epoch, float('nan')):.3f}" for epoch in epochs) + " |"
        for name, result in results.items()
    ]
    command = command_line("bench/main_job_precision.py", argv if argv is not None else sys.argv[1:])
    now = datetime.datetime.now(datetime.UTC)
    body = "\n".join(
        [
            f"- Machine: {cpu_name()}, {os.cpu_count()} logical cores; Python {platform.python_version()}, "
            f"torch {torch.__version__}; `auto` resolves here to {choice.mode} ({choice.reason})",
            f"- Command: `{command.strip()}` (config `{arguments.cfg}`; each run a fresh "
            "`python -m yolov3.train` process, wall-clock of the whole command)",
            f"- Date: {now:%Y-%m-%d %H:%M} UTC; load average (1, 5, 15 min) before "
            + ", ".join(f"{value:.2f}" for value in load_before)
            + " / after "
            + ", ".join(f"{value:.2f}" for value in load_after),
            "",
            "| precision | minutes | time vs fp32 | best val mAP@0.5 | vs fp32 | reached fp32's best - 0.01 at min |",
            "|---|---:|---:|---:|---:|---:|",
            *rows,
            "",
            "Validation mAP@0.5 by epoch:",
            "",
            "| precision | " + " | ".join(str(epoch) for epoch in epochs) + " |",
            "|---|" + "---:|" * len(epochs),
            *curve_rows,
            "",
        ]
    )
    print(f"\n{SECTION}\n\n{body}")
    if arguments.record:
        record_section(DOCS, SECTION, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
