"""Deployment latency on CPU: PyTorch eager and BN-fused against ONNX Runtime fp32, fp16 and int8.

For each model (yolov3-tiny, yolov3 from the official cfgs in ``shared/darknet``), at one input size and
batch 1, five implementations are timed side by side in one process, interleaved per repetition (in a
rotating order) so that background load hits all of them alike:

* ``eager``: ``Darknet(cfg)`` in fp32 under ``torch.inference_mode()``;
* ``fused + channels_last``: the same after :func:`yolov3.models.fuse.fuse_conv_bn`, input and weights in
  ``torch.channels_last``;
* ``ORT fp32`` / ``ORT fp16`` / ``ORT int8``: the raw-heads ONNX graph of :func:`yolov3.export.export_onnx`,
  converted with :func:`yolov3.export.convert_to_fp16` or quantized with :func:`yolov3.export.quantize_int8`
  (QDQ, per-channel int8 weights, uint8 activations, calibrated on the sample images), run by ONNX Runtime's
  CPU execution provider with the same thread count as torch.

The report also gives each ONNX file's size, each implementation's raw-head difference from eager, and, for
models with real weights (yolov3-tiny: the official COCO weights from ``shared/fetch-yolov3-tiny-weights``),
how many of the fp32 detections on the sample images (``shared/darknet/images``; conf 0.25, NMS 0.45) each
implementation finds again (same class, IoU >= 0.5). yolov3 has no real weights here: random ones (fixed seed)
serve for its timings and raw-head differences only. ``--record`` writes the report into
``docs/benchmarks.md``.

Usage::

    python bench/inference_latency.py                    # print the report
    python bench/inference_latency.py --record           # ... and record it in docs/benchmarks.md
    python bench/inference_latency.py --threads 2 1 --record   # at 2 threads, then at 1 (what docs/ has)
    python bench/inference_latency.py --models yolov3-tiny --repeats 50 --threads 1

Several ``--threads`` values time every implementation at each; on a shared machine the 1-thread rows are the
ones background load distorts least (PyTorch's OpenMP threads stall at each layer when a core is taken).
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime
import torch
from torch import nn
from torchvision.ops import box_iou

from common import (
    BUSY_BACKGROUND_CORES,
    CpuMeter,
    background_sentence,
    cpu_name,
    load_bench_module,
    start_bench,
    time_interleaved,
)
from docs_section import print_and_record
from yolov3.data.image_io import list_images, read_image_rgb
from yolov3.export import CalibrationImages, convert_to_fp16, export_onnx, quantize_int8
from yolov3.export.onnx_export import INPUT_NAME
from yolov3.inference import decode_outputs, postprocess, preprocess
from yolov3.inference.model_loading import LoadedModel, load_inference_model
from yolov3.models.fuse import fuse_conv_bn

logger = logging.getLogger("bench.inference_latency")

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPOSITORY_ROOT.parent / "shared"
DEFAULT_DOCS = REPOSITORY_ROOT / "docs" / "benchmarks.md"
SECTION_TITLE = "## Inference latency (issue 3)"
MODEL_CFGS = {"yolov3-tiny": "yolov3-tiny.cfg", "yolov3": "yolov3.cfg"}
IMPLEMENTATIONS = ("eager", "fused+channels_last", "ort-fp32", "ort-fp16", "ort-int8")
LABELS = {
    "eager": "PyTorch eager fp32",
    "fused+channels_last": "PyTorch BN fused + channels_last",
    "ort-fp32": "ONNX Runtime fp32",
    "ort-fp16": "ONNX Runtime fp16",
    "ort-int8": "ONNX Runtime int8 (QDQ)",
}
ONNX_PRECISIONS = {"ort-fp32": "fp32", "ort-fp16": "fp16", "ort-int8": "int8"}
CONF_THRESHOLD, IOU_THRESHOLD, MATCH_IOU = 0.25, 0.45, 0.5
# Above this many cores of CPU time used by other processes during the timings, the report flags them.


@dataclass
class ModelUnderTest:
    """One benchmarked model: the PyTorch models, the ONNX files and what is known about its weights."""

    name: str
    loaded: LoadedModel
    fused: nn.Module  # BN fused, channels_last
    real_weights: bool
    weights_path: Path
    onnx_paths: dict[str, Path]


def parse_arguments(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=list(MODEL_CFGS), default=list(MODEL_CFGS))
    parser.add_argument("--size", type=int, default=416, help="input height and width (default 416)")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per implementation (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs first (default 3)")
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=[os.cpu_count() or 1],
        help="torch and ONNX Runtime threads; several values time every implementation at each (default: all cores)",
    )
    parser.add_argument("--shared", type=Path, default=SHARED_DIR, help="the shared folder (cfgs, images, fetch)")
    parser.add_argument("--record", action="store_true", help=f"write the report into {DEFAULT_DOCS}")
    parser.add_argument("--docs", type=Path, default=DEFAULT_DOCS, help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    if arguments.repeats < 1 or arguments.warmup < 0 or min(arguments.threads) < 1 or arguments.size % 32:
        parser.error("need --repeats >= 1, --warmup >= 0, --threads >= 1 and --size a multiple of 32")
    return arguments


def fetch_tiny_weights(shared: Path) -> Path:
    """The official yolov3-tiny.weights, through the shared fetch script (cached after the first call)."""
    script = shared / "fetch-yolov3-tiny-weights"
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True, check=True, timeout=600)
    return Path(result.stdout.strip().splitlines()[-1])


def ort_session(path: Path, threads: int) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    # Idle worker threads spinning after a run would steal the cores from the next implementation in the rotation.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def torch_runner(model: nn.Module, channels_last: bool) -> Callable[[np.ndarray], list[np.ndarray]]:
    def run(images: np.ndarray) -> list[np.ndarray]:
        batch = torch.from_numpy(images)
        with torch.inference_mode():
            heads = model(batch.contiguous(memory_format=torch.channels_last) if channels_last else batch)
        return [head.numpy() for head in heads]

    return run


def onnx_runner(session: onnxruntime.InferenceSession) -> Callable[[np.ndarray], list[np.ndarray]]:
    def run(images: np.ndarray) -> list[np.ndarray]:
        return session.run(None, {INPUT_NAME: images})

    return run


def prepare_model(
    name: str, arguments: argparse.Namespace, directory: Path, calibration_images: list[Path], forward_cpu: object
) -> ModelUnderTest:
    """Load the model (real or random weights), fuse it, and export and convert its ONNX files."""
    cfg_path = arguments.shared / "darknet" / MODEL_CFGS[name]
    real_weights = name == "yolov3-tiny"
    if real_weights:
        weights_path = fetch_tiny_weights(arguments.shared)
    else:
        weights_path = directory / f"{name}-random.weights"
        logger.info("%s: writing random weights (seed 0) to %s", name, weights_path)
        forward_cpu.write_random_weights(cfg_path, weights_path)
    loaded = load_inference_model(weights_path, cfg=cfg_path)
    size = (arguments.size, arguments.size)
    onnx_paths = {"fp32": export_onnx(loaded.model, loaded.head_specs, directory / f"{name}-fp32.onnx", size)}
    onnx_paths["fp16"] = convert_to_fp16(onnx_paths["fp32"], directory / f"{name}-fp16.onnx")
    logger.info("%s: calibrating int8 on %d images", name, len(calibration_images))
    calibration = CalibrationImages(calibration_images, INPUT_NAME, size, loaded.preprocessing)
    onnx_paths["int8"] = quantize_int8(onnx_paths["fp32"], directory / f"{name}-int8.onnx", calibration)
    fused = fuse_conv_bn(loaded.model).to(memory_format=torch.channels_last)
    return ModelUnderTest(name, loaded, fused, real_weights, weights_path, onnx_paths)


def make_runners(model: ModelUnderTest, threads: int) -> dict[str, Callable[[np.ndarray], list[np.ndarray]]]:
    """Every implementation of ``model`` as a function of a (1, 3, H, W) input; sets torch's thread count."""
    torch.set_num_threads(threads)
    runners = {"eager": torch_runner(model.loaded.model, False), "fused+channels_last": torch_runner(model.fused, True)}
    for implementation, precision in ONNX_PRECISIONS.items():
        runners[implementation] = onnx_runner(ort_session(model.onnx_paths[precision], threads))
    return runners


# --- agreement ---------------------------------------------------------------------------------------


def detections_of(heads: list[np.ndarray], model: ModelUnderTest, size: int) -> dict[str, torch.Tensor]:
    decoded = decode_outputs([torch.from_numpy(head) for head in heads], model.loaded.head_specs, (size, size))
    return postprocess(decoded, CONF_THRESHOLD, IOU_THRESHOLD)[0]


def matched_count(reference: dict[str, torch.Tensor], candidate: dict[str, torch.Tensor]) -> int:
    """How many ``reference`` detections have a ``candidate`` detection of the same class at IoU >= 0.5."""
    if len(reference["boxes"]) == 0 or len(candidate["boxes"]) == 0:
        return 0
    iou = box_iou(reference["boxes"], candidate["boxes"])  # (R, K)
    iou[reference["labels"][:, None] != candidate["labels"][None, :]] = 0.0  # same class only
    return int((iou.max(dim=1).values >= MATCH_IOU).sum())


@dataclass(frozen=True)
class Agreement:
    """One implementation against eager fp32: raw-head difference, and detections found again."""

    relative_difference: float
    reference_found: int  # eager detections that this implementation also finds
    reference_total: int
    own_confirmed: int  # this implementation's detections that eager also finds
    own_total: int


def measure_agreement(
    model: ModelUnderTest, runners: dict[str, Callable], images: list[np.ndarray], size: int
) -> dict[str, Agreement]:
    """Every implementation against eager fp32 on ``images`` (already preprocessed, (1, 3, H, W) each)."""
    totals = {name: [0.0, 0, 0, 0, 0] for name in IMPLEMENTATIONS}
    for image in images:
        reference_heads = runners["eager"](image)
        scale = max(float(np.abs(head).max()) for head in reference_heads)
        reference = detections_of(reference_heads, model, size)
        for name, runner in runners.items():
            heads = runner(image)
            difference = max(float(np.abs(a - b).max()) for a, b in zip(heads, reference_heads, strict=True)) / scale
            own = detections_of(heads, model, size)
            total = totals[name]
            total[0] = max(total[0], difference)
            total[1] += matched_count(reference, own)
            total[2] += len(reference["boxes"])
            total[3] += matched_count(own, reference)
            total[4] += len(own["boxes"])
    return {name: Agreement(*values) for name, values in totals.items()}


@dataclass(frozen=True)
class Timing:
    """The timed runs of every implementation of one model at one thread count."""

    model: ModelUnderTest
    threads: int
    samples: dict[str, list[float]]  # seconds per run, by implementation
    background_cores: float | None

    def median_ms(self, implementation: str) -> float:
        return statistics.median(self.samples[implementation]) * 1e3


# --- report ------------------------------------------------------------------------------------------


def file_mb(path: Path) -> float:
    return path.stat().st_size / 1e6


def percent(part: int, whole: int) -> str:
    return f"{part}/{whole} ({100 * part / whole:.0f}%)" if whole else "n/a"


def format_table(timings: list[Timing], agreements: dict[str, dict[str, Agreement]]) -> str:
    lines = [
        "| model | threads | implementation | median ms | p90 ms | speed vs eager | file MB | raw-head diff vs eager "
        "| eager detections found | own detections confirmed |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for timing in timings:
        model = timing.model
        for name in IMPLEMENTATIONS:
            precision = ONNX_PRECISIONS.get(name)
            size = file_mb(model.onnx_paths[precision]) if precision else file_mb(model.weights_path)
            agreement = agreements[model.name][name]
            found = percent(agreement.reference_found, agreement.reference_total) if model.real_weights else "n/a"
            confirmed = percent(agreement.own_confirmed, agreement.own_total) if model.real_weights else "n/a"
            p90 = np.percentile(timing.samples[name], 90) * 1e3
            lines.append(
                f"| {model.name} | {timing.threads} | {LABELS[name]} | {timing.median_ms(name):.1f} | {p90:.1f} "
                f"| {timing.median_ms('eager') / timing.median_ms(name):.2f}x | {size:.1f} "
                f"| {agreement.relative_difference:.1e} | {found} | {confirmed} |"
            )
    return "\n".join(lines)


def cpu_flags() -> set[str]:
    """The CPU feature flags of /proc/cpuinfo (empty where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def interpretation(timings: list[Timing], agreements: dict[str, dict[str, Agreement]], busy: bool) -> str:
    """Sentences read off the table: the fastest implementation, what fp16 and int8 bought, and why."""
    paragraphs = []
    for timing in timings:
        model, median = timing.model, timing.median_ms
        fastest = min(IMPLEMENTATIONS, key=median)
        fp32 = median("ort-fp32")
        ratio = file_mb(model.onnx_paths["fp32"]) / file_mb(model.onnx_paths["int8"])
        paragraphs.append(
            f"**{model.name}, {timing.threads} thread{'s' if timing.threads > 1 else ''}**: fastest is "
            f"*{LABELS[fastest]}* at {median(fastest):.1f} ms (eager {median('eager'):.1f} ms, BN fused + "
            f"channels_last {median('fused+channels_last'):.1f} ms, ONNX Runtime fp32 {fp32:.1f} ms). fp16 takes "
            f"{median('ort-fp16') / fp32:.2f}x the time of fp32 in a file half the size; int8 takes "
            f"{median('ort-int8') / fp32:.2f}x the time of fp32 in a file {ratio:.2f}x smaller."
        )
    for model_name, model_agreements in agreements.items():
        if not next(timing.model.real_weights for timing in timings if timing.model.name == model_name):
            continue
        found = {
            name: model_agreements[name].reference_found / max(model_agreements[name].reference_total, 1)
            for name in ("ort-fp16", "ort-int8")
        }
        paragraphs.append(
            f"Detections ({model_name}, real weights): of eager's detections on the sample images, fp16 finds "
            f"{100 * found['ort-fp16']:.0f}% again and int8 {100 * found['ort-int8']:.0f}%; int8 moves the raw heads "
            "far more than fp16 does (the diff column)."
        )
    flags = cpu_flags()
    vnni = "has" if "avx512_vnni" in flags or "avx_vnni" in flags else "lacks"
    half = "has" if "avx512_fp16" in flags else "lacks"
    paragraphs.append(
        f"This CPU {vnni} VNNI (int8 dot products) and {half} AVX512-FP16. ONNX Runtime's CPU kernels are built for "
        "fp32 and int8: an fp16 graph buys a smaller file (or a GPU deployment), not CPU speed. int8's speed-up "
        "relies on VNNI; on a CPU without it, quantize with `--reduce-range` and expect less."
    )
    if busy:
        paragraphs.append(
            "Under background load PyTorch suffers most with several threads: its OpenMP threads wait for each other "
            "at every layer when another process takes a core, while ONNX Runtime's thread pool shares work out "
            "dynamically. With one thread that effect is gone, so the 1-thread rows compare PyTorch and ONNX Runtime "
            "more fairly on a busy machine."
        )
    return "\n\n".join(paragraphs)


def build_report(
    arguments: argparse.Namespace,
    command: str,
    started: datetime.datetime,
    loads: tuple[tuple[float, ...], tuple[float, ...]],
    timings: list[Timing],
    agreements: dict[str, dict[str, Agreement]],
    calibration_images: list[Path],
    forward_cpu: object,
) -> str:
    load_start, load_end = loads
    known = [timing.background_cores for timing in timings if timing.background_cores is not None]
    busy = bool(known) and max(known) > BUSY_BACKGROUND_CORES
    background_text = background_sentence(
        [
            (f"{timing.model.name} at {timing.threads} thread{'s' * (timing.threads > 1)}", timing.background_cores)
            for timing in timings
        ]
    )
    models = list({timing.model.name: timing.model for timing in timings}.values())
    weights = ", ".join(
        f"{model.name}: {model.weights_path.name if model.real_weights else 'random (seed 0)'}" for model in models
    )
    image_names = ", ".join(path.name for path in calibration_images)
    thread_counts = ", ".join(str(threads) for threads in arguments.threads)
    lines = [
        f"- Machine: {cpu_name()}, {os.cpu_count()} logical cores (torch CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}); Python {platform.python_version()}, torch {torch.__version__}, "
        f"ONNX Runtime {onnxruntime.__version__} (CPUExecutionProvider)",
        f"- Threads: {thread_counts} (torch.set_num_threads, and the same number of ONNX Runtime intra-op threads; "
        "sequential execution, no spinning)",
        f"- Command: `{command}`",
        f"- Date: {started:%Y-%m-%d %H:%M} UTC; load average (1, 5, 15 min) at start {load_start[0]:.2f}, "
        f"{load_start[1]:.2f}, {load_start[2]:.2f} / at end {load_end[0]:.2f}, {load_end[1]:.2f}, {load_end[2]:.2f}",
        f"- Background CPU use by other processes during the timed runs: {background_text}",
        f"- Input {arguments.size}x{arguments.size} (dog.jpg letterboxed), batch 1; {arguments.warmup} warm-up + "
        f"{arguments.repeats} timed runs per implementation, interleaved in rotating order; weights: {weights}",
        "- ONNX: raw-heads graphs (opset 17, dynamic batch), no NMS in the graph; fp16 by onnxruntime's converter "
        "with float32 inputs and outputs; int8 by onnxruntime static quantization (QDQ, per-channel int8 weights, "
        f"uint8 activations, MinMax) **calibrated on the {len(calibration_images)} sample images** ({image_names}), "
        "the same images the agreement columns use (in-sample)",
        "",
        format_table(timings, agreements),
        "",
        "File MB: the ONNX file, or for the PyTorch rows the Darknet .weights file. Raw-head diff vs eager: "
        "max |difference| / max |eager| over the raw heads, worst sample image. Eager detections found: eager "
        f"fp32's detections on the sample images (conf {CONF_THRESHOLD}, NMS IoU {IOU_THRESHOLD}) that this "
        f"implementation also reports with the same class at IoU >= {MATCH_IOU}; own detections confirmed: the "
        "converse. Both are n/a for random weights, whose detections mean nothing.",
        "",
        interpretation(timings, agreements, busy),
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    start = start_bench("inference_latency", argv)
    arguments = parse_arguments(start.argv)
    forward_cpu = load_bench_module("forward_cpu")
    load_start = os.getloadavg()
    size = arguments.size
    image_paths = list_images(arguments.shared / "darknet" / "images")
    if not image_paths:
        print(f"error: no sample images in {arguments.shared / 'darknet' / 'images'}", file=sys.stderr)
        return 1
    images = [preprocess(read_image_rgb(path), (size, size))[0][None].numpy() for path in image_paths]
    timing_input = images[0]  # (1, 3, size, size): the first sample image, letterboxed

    timings: list[Timing] = []
    agreements: dict[str, dict[str, Agreement]] = {}
    with tempfile.TemporaryDirectory(prefix="inference_latency_") as temporary:
        for name in arguments.models:
            model = prepare_model(name, arguments, Path(temporary), image_paths, forward_cpu)
            for threads in arguments.threads:
                runners = make_runners(model, threads)
                if name not in agreements:
                    agreements[name] = measure_agreement(model, runners, images, size)
                timed = {key: (lambda run=run: run(timing_input)) for key, run in runners.items()}
                logger.info(
                    "%s, %d threads: %d warm-up + %d timed runs", name, threads, arguments.warmup, arguments.repeats
                )
                with CpuMeter() as meter:
                    samples = time_interleaved(timed, arguments.warmup, arguments.repeats)
                timings.append(Timing(model, threads, samples, meter.background_cores))
        loads = (load_start, os.getloadavg())
        report = build_report(
            arguments, start.command, start.started, loads, timings, agreements, image_paths, forward_cpu
        )
    print_and_record(report, arguments.record, arguments.docs, SECTION_TITLE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
