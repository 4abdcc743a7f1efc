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
import datetime
import json
import os
import platform
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

from common import CpuMeter, command_line, cpu_name, time_interleaved
from docs_section import record_section
from yolov3.checkpoint import load_checkpoint, model_from_checkpoint
from yolov3.data.image_io import read_image_rgb
from yolov3.data.letterbox import letterbox_image

SECTION = "## Compression and deployment on BCCD test (issue 14)"
NOTES_MARKER = "<!-- notes: kept when bench/compression_real.py --record rewrites this section -->"
ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"
THREADS = (1, 2)


def run_command(arguments: list[str]) -> None:
    """``python -m <arguments>`` in the repository root; its output is shown only when it fails."""
    result = subprocess.run([sys.executable, "-m", *arguments], cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
        raise SystemExit(f"failed ({result.returncode}): python -m {' '.join(arguments)}")


def make_artifacts(arguments: argparse.Namespace, folder: Path) -> dict[str, Path]:
    """Every artifact of the table, by variant name, made with the project's CLIs."""
    checkpoint = arguments.checkpoint
    export = ["yolov3.export", "--weights", str(checkpoint)]
    artifacts = {"fp32 .pt (PyTorch)": checkpoint}
    run_command([*export, "--format", "darknet", "--out", str(folder / "model")])
    artifacts["fp32 .weights (Darknet)"] = folder / "model.weights"
    run_command([*export, "--format", "onnx", "--out", str(folder / "fp32.onnx")])
    artifacts["fp32 ONNX"] = folder / "fp32.onnx"
    run_command([*export, "--format", "onnx", "--out", str(folder / "ptq.onnx"), "--int8", "--calibration-data",
                 str(arguments.cfg)])  # fmt: skip
    artifacts["int8 PTQ ONNX (train-split calibration)"] = folder / "ptq.onnx"
    if arguments.qat_epochs > 0:
        train_cfg = arguments.train_cfg or checkpoint.parent / "args.yaml"
        run_command([*export, "--format", "onnx", "--out", str(folder / "qat.onnx"), "--int8", "--qat",
                     "--train-cfg", str(train_cfg), "--qat-epochs", str(arguments.qat_epochs),
                     "--qat-dir", str(folder / "qat-run"), "--no-progress"])  # fmt: skip
        artifacts[f"int8 QAT ONNX ({arguments.qat_epochs} epochs)"] = folder / "qat.onnx"
    return artifacts


def score(artifact: Path, arguments: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """The ``evaluate --json-out`` report of one artifact on the test split."""
    out = folder / f"{artifact.name}.json"
    cfg = ["--cfg", str(artifact.with_suffix(".cfg"))] if artifact.suffix == ".weights" else []
    run_command(["yolov3.evaluate", "--weights", str(artifact), *cfg, "--data", str(arguments.cfg), "--split",
                 arguments.split, "--json-out", str(out)])  # fmt: skip
    return json.loads(out.read_text())


def latency_runners(artifacts: dict[str, Path], image: np.ndarray) -> dict[str, Callable[[], object]]:
    """One runner per (variant, threads): ONNX files in onnxruntime, the checkpoint in PyTorch fp32."""
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
            elif path.suffix == ".pt":
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


def render(results: dict[str, Any]) -> str:
    reference = next(row["bytes"] for row in results["rows"] if row["variant"].startswith("fp32 .weights"))
    lines = [
        f"- Machine: {results['machine']}; Python {results['python']}, torch {results['torch']}, onnxruntime "
        f"{results['onnxruntime']}",
        f"- Command: `{results['command']}`",
        f"- Date: {results['date']}; background CPU use by other processes during the timings: "
        f"{results['background_cores']:.2f} cores",
        f"- Checkpoint `{results['checkpoint']}`, scored on `{results['cfg']}` split `{results['split']}` with "
        "`python -m yolov3.evaluate --weights ARTIFACT --data CFG --split test` (each artifact its own backend). "
        f"Latency: batch 1 at {results['size'][0]}x{results['size'][1]}, median of {results['repeats']} "
        "interleaved runs after warm-up.",
        "",
        "| variant | file bytes | fp32 .weights / file | mAP@0.5 | mAP@[.5:.95] | backend | ms, 1 thread "
        "| ms, 2 threads |",
        "|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    for row in results["rows"]:
        times = [row["latency_ms"].get(str(threads)) for threads in THREADS]
        shown = [f"{value:.1f}" if value is not None else "-" for value in times]
        lines.append(
            f"| {row['variant']} | {row['bytes']:,} | {reference / row['bytes']:.2f}x | {row['map50']:.3f} | "
            f"{row['map']:.3f} | {row['backend']} | {shown[0]} | {shown[1]} |"
        )
    return "\n".join(lines) + "\n"


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="a trained checkpoint (.pt)")
    parser.add_argument("--cfg", type=Path, default=Path("configs/bccd.yaml"), help="dataset / training config")
    parser.add_argument("--train-cfg", type=Path, help="QAT fine-tuning config (default: args.yaml beside it)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--qat-epochs", type=int, default=3, help="0 leaves QAT out (default 3)")
    parser.add_argument("--image", help="the image timed (default: the split's first, letterboxed)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="keep the artifacts in this folder (default: a temporary one)")
    parser.add_argument("--record", action="store_true", help=f"write the table into {DOCS.name}")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    with tempfile.TemporaryDirectory(prefix="compression-real-") as temporary:
        folder = arguments.keep or Path(temporary)
        folder.mkdir(parents=True, exist_ok=True)
        artifacts = make_artifacts(arguments, folder)
        reports = {name: score(path, arguments, folder) for name, path in artifacts.items()}
        size = tuple(load_checkpoint(arguments.checkpoint).input_size or (416, 416))
        runners = latency_runners(artifacts, test_image(arguments, (int(size[0]), int(size[1]))))
        with CpuMeter() as meter:
            samples = time_interleaved(runners, arguments.warmup, arguments.repeats)
        torch.set_num_threads(os.cpu_count() or 1)
        rows = []
        for name, path in artifacts.items():
            report = reports[name]
            latency = {key.split("|")[1]: 1000 * statistics.median(values) for key, values in samples.items()
                       if key.split("|")[0] == name}  # fmt: skip
            rows.append({"variant": name, "bytes": path.stat().st_size, "map50": report["mAP50"],
                         "map": report["coco"]["stats"]["AP"], "backend": report["backend"],
                         "latency_ms": latency})  # fmt: skip
    results = {
        "machine": f"{cpu_name()}, {os.cpu_count()} logical cores",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "command": command_line("bench/compression_real.py", sys.argv[1:] if argv is None else list(argv)),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
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
