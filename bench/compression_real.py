"""Compression and deployment on the real task (issue 14): each artifact's size, BCCD test mAP and CPU latency.

Starting from one trained checkpoint (default: ``best.pt`` of a ``configs/bccd.yaml`` run), it makes every
artifact with the commands users run, one subprocess each, and scores each with ``python -m yolov3.evaluate
--weights ARTIFACT --data CFG --split test --json-out ...`` (the same command, the same table):

* ``fp32 .pt``: the checkpoint itself (PyTorch);
* ``fp32 .weights``: ``python -m yolov3.export --format darknet`` (the size reference of the ratio column);
* ``fp32 ONNX``: ``python -m yolov3.export --format onnx``;
* ``int8 PTQ ONNX``: ``... --int8 --calibration-data CFG`` (onnxruntime's static QDQ, calibrated on the train
  split);
* ``int8 QAT ONNX``: ``... --int8 --qat --train-cfg ARGS`` (fake-quantized fine-tuning with the project's
  trainer, ``--qat-epochs`` epochs, then the same QDQ export).

Latency: one letterboxed BCCD test image at the model's input size, batch 1, at 1 and 2 threads; onnxruntime
(``intra_op_num_threads``) for the ONNX files and PyTorch fp32 (``torch.set_num_threads``, BN unfused, as
``evaluate`` runs it) for the checkpoint, all interleaved in rotating order so that background load hits every
row alike.

Usage::

    python bench/compression_real.py --checkpoint logs/<bccd run>/best.pt --record
    python bench/compression_real.py --checkpoint best.pt --qat-epochs 1 --repeats 3   # a quicker look
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import torch

from common import CpuMeter, cpu_name, start_bench, time_interleaved
from docs_section import record_section
from yolov3.checkpoint import load_checkpoint, model_from_checkpoint
from yolov3.data.image_io import read_image_rgb
from yolov3.data.letterbox import letterbox_image

SECTION = "## Compression and deployment on BCCD test (issue 14)"
NOTES_MARKER = "<!-- notes: kept when bench/compression_real.py --record rewrites this section -->"
ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"
THREADS = (1, 2)

logger = logging.getLogger("bench.compression_real")


def run_command(arguments: list[str], output: Path | None = None) -> None:
    """``python -m <arguments>`` in the repository root; its output is shown only when it fails. With
    ``output``, a command whose ``output`` exists already (a ``--keep`` folder of an earlier run) is skipped."""
    if output is not None and output.exists():
        logger.info("kept: %s (skipping python -m %s)", output, arguments[0])
        return
    logger.info("python -m %s", " ".join(arguments))
    result = subprocess.run([sys.executable, "-m", *arguments], cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
        raise SystemExit(f"failed ({result.returncode}): python -m {' '.join(arguments)}")


def make_artifacts(arguments: argparse.Namespace, folder: Path) -> dict[str, Path]:
    """Every artifact of the table, by variant name, made with the project's CLIs."""
    checkpoint = arguments.checkpoint
    train_cfg = arguments.train_cfg or checkpoint.parent / "args.yaml"
    export = ["yolov3.export", "--weights", str(checkpoint)]
    artifacts = {"fp32 .pt (PyTorch)": checkpoint}
    run_command([*export, "--format", "darknet", "--out", str(folder / "model")], folder / "model.weights")
    artifacts["fp32 .weights (Darknet)"] = folder / "model.weights"
    run_command([*export, "--format", "onnx", "--out", str(folder / "fp32.onnx")], folder / "fp32.onnx")
    artifacts["fp32 ONNX"] = folder / "fp32.onnx"
    run_command([*export, "--format", "onnx", "--out", str(folder / "ptq.onnx"), "--int8", "--calibration-data",
                 str(arguments.cfg)], folder / "ptq.onnx")  # fmt: skip
    artifacts["int8 PTQ ONNX (train-split calibration)"] = folder / "ptq.onnx"
    if arguments.qat_epochs > 0:
        quantized = folder / f"qat{arguments.qat_epochs}.onnx"
        run_command([*export, "--format", "onnx", "--out", str(quantized), "--int8", "--qat", "--train-cfg",
                     str(train_cfg), "--qat-epochs", str(arguments.qat_epochs), "--qat-dir",
                     str(folder / f"qat{arguments.qat_epochs}-run"), "--no-progress"], quantized)  # fmt: skip
        artifacts[f"int8 QAT ONNX ({arguments.qat_epochs} epochs)"] = quantized
    if arguments.deep_compression:
        artifacts |= deep_compression(arguments, train_cfg, folder)
    for fraction in arguments.structured_flops or ():
        artifacts |= structured(arguments, fraction, train_cfg, folder)
    if arguments.lottery_rounds:
        artifacts |= lottery(arguments, train_cfg, folder)
    return artifacts


def lottery(arguments: argparse.Namespace, train_cfg: Path, folder: Path) -> dict[str, Path]:
    """The lottery-ticket experiment (``prune lottery``): a dense run of ``--lottery-epochs``, then rounds of
    global magnitude pruning (``--lottery-rate`` of the remaining weights), rewinding the survivors to their
    initial values (the COCO weights the run starts from) and retraining; beside each ticket, the random
    re-initialisation control with the same mask. Every run's ``best.pt`` is one row."""
    rounds, epochs = arguments.lottery_rounds, arguments.lottery_epochs
    out = folder / f"lottery-{rounds}x{arguments.lottery_rate}-{epochs}e"
    schedule = ["--rounds", str(rounds), "--rate", f"{arguments.lottery_rate}", "--control", "random_reinit"]
    run_command(["yolov3.prune", "lottery", "--cfg", str(train_cfg), "--set", f"train.epochs={epochs}", *schedule,
                 "--out", str(out), "--no-progress"], out / "lottery.csv")  # fmt: skip
    artifacts = {f"lottery: dense ({epochs} epochs from the COCO weights)": out / "round-0" / "best.pt"}
    for number in range(1, rounds + 1):
        sparsity = 1 - (1 - arguments.lottery_rate) ** number
        artifacts[f"lottery: ticket, round {number} ({sparsity:.1%} sparse)"] = out / f"round-{number}" / "best.pt"
        artifacts[f"lottery: random re-init control, round {number}"] = out / f"control-{number}" / "best.pt"
    return artifacts


def deep_compression(arguments: argparse.Namespace, train_cfg: Path, folder: Path) -> dict[str, Path]:
    """Deep Compression as the issue asks: per-layer sparsities from the sensitivity sweep, gradual pruning
    with fine-tuning (``prune iterative --budget``), more fine-tuning at the final sparsity (``prune oneshot`` of
    the pruned model, which keeps its zeros), then k-means sharing with centroid fine-tuning and Huffman coding
    (``compress`` of the pruned model, no further pruning). Folder names carry the settings, so a kept folder
    never serves an artifact made with others."""
    common = ["--cfg", str(train_cfg), "--no-progress"]
    target = ["--target", f"{arguments.sparsity}"]
    budget = folder / f"sensitivity-{arguments.sparsity}" / "budget.yaml"
    sweep = ["--metric", "map", "--max-sparsity", "0.97", "--out", str(budget.parent)]
    run_command(["yolov3.prune", "sensitivity", "--weights", str(arguments.checkpoint), *common, *target, *sweep],
                budget)  # fmt: skip
    pruned = folder / f"pruned-{arguments.sparsity}-{arguments.prune_rounds}x{arguments.prune_epochs}" / "pruned.pt"
    rounds = ["--rounds", str(arguments.prune_rounds), "--finetune-epochs", str(arguments.prune_epochs)]
    run_command(["yolov3.prune", "iterative", "--weights", str(arguments.checkpoint), *common, *target, "--budget",
                 str(budget), *rounds, "--out", str(pruned.parent)], pruned)  # fmt: skip
    if arguments.final_epochs:
        final = pruned.parent / f"final-{arguments.final_epochs}" / "pruned.pt"
        run_command(["yolov3.prune", "oneshot", "--weights", str(pruned), *common, *target, "--budget", str(budget),
                     "--finetune-epochs", str(arguments.final_epochs), "--out", str(final.parent)], final)  # fmt: skip
        pruned = final
    sharing = f"k{2**arguments.bits}-c{arguments.centroid_epochs}"
    compressed = pruned.parent / f"{sharing}.yolov3c"
    options = ["--sparsity", "0", "--bits", str(arguments.bits), "--centroid-epochs", str(arguments.centroid_epochs)]
    run_command(["yolov3.compress", "--weights", str(pruned), *common, "--out", str(compressed), *options,
                 "--run-dir", str(pruned.parent / f"compress-{sharing}")], compressed)  # fmt: skip
    epochs = arguments.prune_rounds * arguments.prune_epochs + arguments.final_epochs
    name = (
        f"Deep Compression .yolov3c ({arguments.sparsity:.0%} sparse by the sweep's budget in "
        f"{arguments.prune_rounds} rounds, {epochs} epochs; k={2**arguments.bits}, {arguments.centroid_epochs} "
        "centroid epochs)"
    )
    return {name: compressed}


def structured(arguments: argparse.Namespace, fraction: float, train_cfg: Path, folder: Path) -> dict[str, Path]:
    """Channel pruning to ``fraction`` of the FLOPs (one of ``--structured-flops``), fine-tuned, as Darknet
    .cfg + .weights; its fp32 ONNX (for the latency), and (``--qat-epochs``) its int8 QAT ONNX: prune, retrain,
    QAT, export int8, the path NVIDIA's TAO takes for YOLO."""
    multiple = arguments.structured_channel_multiple
    out = folder / f"structured-{fraction}-c{multiple}-{arguments.structured_epochs}e"
    finetuned = out / "finetuned.weights"
    pruning = ["--flops-target", f"{fraction}", "--channel-multiple", str(multiple),
               "--finetune-epochs", str(arguments.structured_epochs)]  # fmt: skip
    run_command(["yolov3.prune", "structured", "--weights", str(arguments.checkpoint), "--cfg", str(train_cfg),
                 *pruning, "--out", str(out), "--no-progress"], finetuned)  # fmt: skip
    label = f"structured, {fraction:.0%} of the FLOPs, channels x{multiple}, {arguments.structured_epochs} epochs"
    artifacts = {f"{label}: .cfg + .weights (Darknet)": finetuned}
    export = ["yolov3.export", "--weights", str(out / "finetune" / "best.pt"), "--format", "onnx"]
    onnx = out / "fp32.onnx"
    run_command([*export, "--out", str(onnx)], onnx)
    artifacts[f"{label}: fp32 ONNX"] = onnx
    if arguments.qat_epochs > 0:
        quantized = out / f"qat{arguments.qat_epochs}.onnx"
        qat = ["--int8", "--qat", "--train-cfg", str(out / "finetune" / "args.yaml"), "--qat-epochs",
               str(arguments.qat_epochs), "--qat-dir", f"{quantized.with_suffix('')}-run", "--no-progress"]  # fmt: skip
        run_command([*export, "--out", str(quantized), *qat], quantized)
        artifacts[f"{label}: int8 QAT ONNX ({arguments.qat_epochs} epochs)"] = quantized
    return artifacts


def score(artifact: Path, arguments: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """The ``evaluate --json-out`` report of one artifact on the test split."""
    out = folder / f"{artifact.name}.json"
    cfg = ["--cfg", str(darknet_cfg(artifact))] if artifact.suffix == ".weights" else []
    run_command(["yolov3.evaluate", "--weights", str(artifact), *cfg, "--data", str(arguments.cfg), "--split",
                 arguments.split, "--json-out", str(out)])  # fmt: skip
    return json.loads(out.read_text())


def darknet_cfg(weights: Path) -> Path:
    """The .cfg beside a .weights: same stem (an export), else the folder's ``pruned.cfg`` (structured)."""
    same_stem = weights.with_suffix(".cfg")
    return same_stem if same_stem.is_file() else weights.parent / "pruned.cfg"


def latency_runners(artifacts: dict[str, Path], image: np.ndarray, checkpoint: Path) -> dict[str, Callable[[], object]]:
    """One runner per (variant, threads): ONNX files in onnxruntime, ``checkpoint`` in PyTorch fp32. Sparse
    checkpoints and ``.yolov3c`` files run as dense fp32 models (zeros are not skipped): not timed."""
    runners: dict[str, Callable[[], object]] = {}
    pixels = image.astype(np.float32).transpose(2, 0, 1)[None] / 255.0  # (H, W, 3) -> (1, 3, H, W)
    for name, path in artifacts.items():
        for threads in THREADS:
            key = f"{name}|{threads}"
            if path.suffix == ".onnx":
                options = onnxruntime.SessionOptions()
                options.intra_op_num_threads = threads
                options.inter_op_num_threads = 1
                session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                feed = {session.get_inputs()[0].name: pixels}
                runners[key] = lambda session=session, feed=feed: session.run(None, feed)
            elif path == checkpoint:
                model = model_from_checkpoint(load_checkpoint(path)).eval()
                tensor = torch.from_numpy(pixels)

                def forward(model: torch.nn.Module = model, tensor: torch.Tensor = tensor, threads: int = threads):
                    torch.set_num_threads(threads)
                    with torch.inference_mode():
                        return model(tensor)

                runners[key] = forward
    return runners


def test_image(arguments: argparse.Namespace, size: tuple[int, int]) -> np.ndarray:
    """The first test image, letterboxed to the network input as evaluation does it."""
    path = Path(arguments.image) if arguments.image else None
    if path is None:
        from yolov3.data.dataset_config import build_dataset, load_dataset_config

        dataset = build_dataset(load_dataset_config(arguments.cfg), arguments.split, for_evaluation=True)
        image = dataset[0].image
    else:
        image = read_image_rgb(path)
    return letterbox_image(image, size, fill=127)[0]


def artifact_bytes(path: Path) -> int:
    """What a user ships: the file, and for Darknet weights their .cfg too."""
    return path.stat().st_size + (darknet_cfg(path).stat().st_size if path.suffix == ".weights" else 0)


def render(results: dict[str, Any]) -> str:
    rows = results["rows"]
    reference = next(row["bytes"] for row in rows if row["variant"].startswith("fp32 .weights"))
    dense = next(row for row in rows if row["variant"] == "fp32 ONNX")
    dense_ms = dense["latency_ms"].get("1")
    lines = [
        f"- Machine: {results['machine']}; Python {results['python']}, torch {results['torch']}, onnxruntime "
        f"{results['onnxruntime']}",
        f"- Command: `{results['command']}`",
        f"- Date: {results['date']}; background CPU use by other processes during the timings: "
        f"{results['background_cores']:.2f} cores",
        f"- Checkpoint `{results['checkpoint']}`, scored on `{results['cfg']}` split `{results['split']}` with "
        "`python -m yolov3.evaluate --weights ARTIFACT --data CFG --split test` (each artifact its own backend). "
        f"Latency: batch 1 at {results['size'][0]}x{results['size'][1]}, median of {results['repeats']} "
        "interleaved runs after warm-up; sparse checkpoints and `.yolov3c` files run as dense fp32 models, so "
        "they are not timed. File bytes of Darknet weights include their `.cfg`.",
        "",
        "| variant | file bytes | fp32 .weights / file | mAP@0.5 | vs dense | mAP@[.5:.95] | backend | ms, 1 thread "
        "| fp32 ONNX / ms, 1 thread | ms, 2 threads |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for row in rows:
        times = [row["latency_ms"].get(str(threads)) for threads in THREADS]
        shown = [f"{value:.1f}" if value is not None else "-" for value in times]
        speedup = f"{dense_ms / times[0]:.2f}x" if dense_ms and times[0] else "-"
        lines.append(
            f"| {row['variant']} | {row['bytes']:,} | {reference / row['bytes']:.2f}x | {row['map50']:.3f} | "
            f"{100 * (row['map50'] - dense['map50']):+.1f} | {row['map']:.3f} | {row['backend']} | {shown[0]} | "
            f"{speedup} | {shown[1]} |"
        )
    return "\n".join([*lines, *lottery_summary(rows, dense)]) + "\n"


def lottery_summary(rows: list[dict[str, Any]], dense: dict[str, Any]) -> list[str]:
    """The lottery acceptance line: the sparsest ticket within 1 point of mAP@0.5, against the dense model of
    the table and against the lottery's own dense run (same epochs), and the random re-init control there."""
    tickets = {}
    for row in rows:
        found = re.fullmatch(r"lottery: ticket, round (\d+) \(([\d.]+)% sparse\)", row["variant"])
        if found:
            tickets[int(found.group(1))] = (float(found.group(2)), row["map50"])
    control_pattern = r"lottery: random re-init control, round (\d+)"
    controls = {int(found.group(1)): row["map50"] for row in rows
                if (found := re.fullmatch(control_pattern, row["variant"]))}  # fmt: skip
    own = next((row for row in rows if row["variant"].startswith("lottery: dense")), None)
    if not tickets or own is None:
        return []
    lines = ["", "Lottery ticket, the sparsest within 1 point of mAP@0.5:"]
    for label, reference in (("the dense model of this table", dense), ("the lottery's own dense run", own)):
        within = [(sparsity, value, round_) for round_, (sparsity, value) in tickets.items()
                  if value >= reference["map50"] - 0.01]  # fmt: skip
        if not within:
            best = max(tickets.values(), key=lambda ticket: ticket[1])
            lines.append(f"- of {label} ({reference['map50']:.3f}): none (the best ticket: {best[0]:.1f}% sparse, "
                         f"{best[1]:.3f})")  # fmt: skip
            continue
        sparsity, value, round_ = max(within)
        control = controls.get(round_)
        lines.append(
            f"- of {label} ({reference['map50']:.3f}): **{sparsity:.1f}% sparse** ({value:.3f}); the random re-init "
            "control at that sparsity: " + (f"{control:.3f}" if control is not None else "not run")
        )
    return lines


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="a trained checkpoint (.pt)")
    parser.add_argument("--cfg", type=Path, default=Path("configs/bccd.yaml"), help="dataset / training config")
    parser.add_argument("--train-cfg", type=Path, help="QAT fine-tuning config (default: args.yaml beside it)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--qat-epochs", type=int, default=3, help="0 leaves QAT out (default 3)")
    parser.add_argument("--deep-compression", action="store_true", help="add the Deep Compression row")
    parser.add_argument("--sparsity", type=float, default=0.92, help="Deep Compression: overall sparsity (0.92)")
    parser.add_argument("--prune-rounds", type=int, default=4, help="Deep Compression: pruning rounds (4)")
    parser.add_argument("--prune-epochs", type=int, default=5, help="Deep Compression: epochs per round (5)")
    parser.add_argument("--final-epochs", type=int, default=8, help="Deep Compression: epochs at the final "
                        "sparsity (8)")  # fmt: skip
    parser.add_argument("--bits", type=int, default=4, help="Deep Compression: bits per shared weight (4)")
    parser.add_argument("--centroid-epochs", type=int, default=4, help="Deep Compression: centroid epochs (4)")
    parser.add_argument("--structured-flops", type=float, nargs="+", metavar="FRACTION",
                        help="add structured pruning to each of these fractions of the FLOPs")  # fmt: skip
    parser.add_argument("--structured-epochs", type=int, default=30, help="structured: fine-tuning epochs (30)")
    parser.add_argument("--structured-channel-multiple", type=int, default=16, help="structured: channels kept "
                        "per layer, a multiple of this (16: onnxruntime's blocked fp32 layout)")  # fmt: skip
    parser.add_argument("--lottery-rounds", type=int, default=0, help="add the lottery-ticket rows (0: none)")
    parser.add_argument("--lottery-rate", type=float, default=0.5, help="lottery: pruned per round (0.5)")
    parser.add_argument("--lottery-epochs", type=int, default=15, help="lottery: epochs of every run (15)")
    parser.add_argument("--image", help="the image timed (default: the split's first, letterboxed)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="keep the artifacts in this folder (default: a temporary one); "
                        "artifacts already there are reused, so a stopped run continues")  # fmt: skip
    parser.add_argument("--record", action="store_true", help=f"write the table into {DOCS.name}")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    start = start_bench("compression_real", argv)
    arguments = parse_arguments(start.argv)
    with tempfile.TemporaryDirectory(prefix="compression-real-") as temporary:
        folder = arguments.keep or Path(temporary)
        folder.mkdir(parents=True, exist_ok=True)
        artifacts = make_artifacts(arguments, folder)
        reports = {name: score(path, arguments, folder) for name, path in artifacts.items()}
        size = tuple(load_checkpoint(arguments.checkpoint).input_size or (416, 416))
        image = test_image(arguments, (int(size[0]), int(size[1])))
        runners = latency_runners(artifacts, image, arguments.checkpoint)
        with CpuMeter() as meter:
            samples = time_interleaved(runners, arguments.warmup, arguments.repeats)
        torch.set_num_threads(os.cpu_count() or 1)
        rows = []
        for name, path in artifacts.items():
            report = reports[name]
            latency = {key.split("|")[1]: 1000 * statistics.median(values) for key, values in samples.items()
                       if key.split("|")[0] == name}  # fmt: skip
            rows.append({"variant": name, "bytes": artifact_bytes(path), "map50": report["mAP50"],
                         "map": report["coco"]["stats"]["AP"], "backend": report["backend"],
                         "latency_ms": latency})  # fmt: skip
    results = {
        "machine": f"{cpu_name()}, {os.cpu_count()} logical cores",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "command": start.command,
        "date": start.started.strftime("%Y-%m-%d %H:%M UTC"),
        "background_cores": meter.background_cores or 0.0,
        "checkpoint": str(arguments.checkpoint),
        "cfg": str(arguments.cfg),
        "split": arguments.split,
        "size": size,
        "repeats": arguments.repeats,
        "rows": rows,
    }
    report = render(results)
    print(f"{SECTION}\n\n{report}")
    if arguments.record:
        record_section(DOCS, SECTION, report, NOTES_MARKER)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
