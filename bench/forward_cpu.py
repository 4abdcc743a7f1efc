"""Forward-pass latency and peak memory on CPU: our ``Darknet`` against OpenCV's Darknet importer.

For each model (yolov3, yolov3-tiny from the official cfgs in ``shared/darknet``), at one input size
and batch 1, four implementations are timed side by side in one process, interleaved per repetition
(in a rotating order) so that background load hits all of them alike:

* ``eager``: ``Darknet(cfg)`` in fp32 under ``torch.inference_mode()``;
* ``fused``: the same after :func:`yolov3.models.fuse.fuse_conv_bn`;
* ``fused + channels_last``: the fused model and its input in ``torch.channels_last``;
* ``OpenCV``: ``cv2.dnn.readNetFromDarknet`` on the OpenCV backend and CPU target.

Weights are random (fixed seed) and written in Darknet layout, since speed does not depend on their
values; ``--weights-tiny`` / ``--weights-yolov3`` use real files instead. The script also times fp32
``torch.mm`` (interleaved with the models) to express each implementation's rate as a fraction of what
this CPU reaches on a plain matrix multiply, and measures each implementation's peak memory in a fresh
child process. ``--record`` writes the report into ``docs/benchmarks.md``.

Usage::

    python bench/forward_cpu.py                      # print the report
    python bench/forward_cpu.py --record             # ... and record it in docs/benchmarks.md
    python bench/forward_cpu.py --models yolov3-tiny --repeats 50 --threads 1
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import gc
import logging
import multiprocessing
import os
import platform
import resource
import statistics
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from common import BUSY_BACKGROUND_CORES, CpuMeter, cpu_name, initialize_convolutions, start_bench, time_interleaved
from docs_section import print_and_record
from yolov3.darknet.cfg import ConvolutionalSection, parse_cfg
from yolov3.darknet.graph import build_graph
from yolov3.models import Darknet
from yolov3.models.fuse import fuse_conv_bn

logger = logging.getLogger("bench.forward_cpu")

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SHARED = REPOSITORY_ROOT.parent / "shared" / "darknet"
DEFAULT_DOCS = REPOSITORY_ROOT / "docs" / "benchmarks.md"
SECTION_TITLE = "## Forward pass on CPU (issue 2)"
# Hand-written notes below this line inside the section are kept when --record rewrites the section.
NOTES_MARKER = "<!-- notes: kept when bench/forward_cpu.py --record rewrites this section -->"

MODEL_CFGS = {"yolov3": "yolov3.cfg", "yolov3-tiny": "yolov3-tiny.cfg"}
IMPLEMENTATIONS = ("eager", "fused", "fused+channels_last", "opencv")
IMPLEMENTATION_LABELS = {
    "eager": "ours, eager fp32",
    "fused": "ours, BN fused",
    "fused+channels_last": "ours, BN fused + channels_last",
    "opencv": "OpenCV DNN",
}
MATMUL = "matmul"
MATMUL_SIZE = 2048
SEED = 0
# Above this many cores of CPU time used by other processes during the timings, the report flags them.


@dataclass(frozen=True)
class ModelSetup:
    """One benchmarked model: its name, cfg, the weights file used and its forward cost."""

    name: str
    cfg_path: Path
    weights_path: Path
    random_weights: bool
    gflop: float


@dataclass(frozen=True)
class ResultRow:
    """The figures of one implementation of one model."""

    model: str
    implementation: str
    median_ms: float
    p90_ms: float
    gflop_per_second: float
    percent_of_matmul: float
    peak_mb: float | None
    speed_vs_opencv: float | None


# --- set-up ------------------------------------------------------------------------------------------


def model_benchmark_parser(description: str) -> argparse.ArgumentParser:
    """The options this script and ``inference_precision.py`` share, before each adds its own switches; parse
    with :func:`parse_model_benchmark_arguments`, which adds ``--record`` and checks the values."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--models", nargs="+", choices=list(MODEL_CFGS), default=list(MODEL_CFGS))
    parser.add_argument("--size", type=int, default=416, help="input height and width (default 416)")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per implementation (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs first (default 3)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch and OpenCV threads")
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED, help="folder with the official cfgs")
    parser.add_argument("--weights-tiny", type=Path, help="real yolov3-tiny weights instead of random ones")
    parser.add_argument("--weights-yolov3", type=Path, help="real yolov3 weights instead of random ones")
    return parser


def parse_model_benchmark_arguments(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """``argv`` through a :func:`model_benchmark_parser` (with ``--record`` added last), its values checked."""
    parser.add_argument("--record", action="store_true", help=f"write the report into {DEFAULT_DOCS}")
    parser.add_argument("--docs", type=Path, default=DEFAULT_DOCS, help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    if arguments.repeats < 1 or arguments.warmup < 0 or arguments.threads < 1 or arguments.size % 32:
        parser.error("need --repeats >= 1, --warmup >= 0, --threads >= 1 and --size a multiple of 32")
    return arguments


def parse_arguments(argv: Sequence[str]) -> argparse.Namespace:
    parser = model_benchmark_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory child processes")
    return parse_model_benchmark_arguments(parser, argv)


def set_threads(threads: int) -> None:
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)


def model_gflop(cfg_path: Path, size: int) -> float:
    """Forward cost in GFLOP (Darknet's BFLOPs): 2*filters*(in/groups)*size^2*out_h*out_w summed over convs."""
    flop = 0
    for node in build_graph(parse_cfg(cfg_path), size, size):
        section = node.section
        if isinstance(section, ConvolutionalSection):
            _, rows, columns = node.output_shape
            flop += 2 * section.filters * (node.in_channels // section.groups) * section.size**2 * rows * columns
    return flop / 1e9


def write_random_weights(cfg_path: Path, weights_path: Path, seed: int = SEED) -> None:
    model = Darknet(cfg_path)
    initialize_convolutions(model, seed)
    model.save_darknet_weights(weights_path)


def make_input(size: int, seed: int = SEED) -> np.ndarray:
    """A (1, 3, size, size) float32 image in 0..1, the same for every implementation."""
    return np.random.default_rng(seed).random((1, 3, size, size), dtype=np.float32)


# --- implementations ---------------------------------------------------------------------------------


def load_torch_model(implementation: str, cfg_path: Path, weights_path: Path) -> nn.Module:
    model = Darknet(cfg_path)
    model.load_darknet_weights(weights_path)
    model.eval()
    if implementation == "eager":
        return model
    model = fuse_conv_bn(model)  # the unfused original is dropped here
    if implementation == "fused+channels_last":
        model = model.to(memory_format=torch.channels_last)
    return model


def opencv_output_names(net: cv2.dnn.Net, raw: bool) -> list[str]:
    """The [yolo] output layers in cfg order; with ``raw``, the conv feeding each one instead.

    OpenCV's importer names layers ``<kind>_<darknet index>`` and puts a ``permute`` before each
    ``yolo``; the raw head is the layer before that permute (the decoded ``yolo`` output is not
    comparable with our raw heads).
    """
    layer_names = list(net.getLayerNames())
    outputs = sorted(net.getUnconnectedOutLayersNames(), key=layer_names.index)
    if not raw:
        return outputs
    raw_names = []
    for name in outputs:
        index = layer_names.index(name) - 1
        while index > 0 and layer_names[index].startswith("permute"):
            index -= 1
        raw_names.append(layer_names[index])
    return raw_names


@dataclass(frozen=True)
class Runner:
    """One loaded implementation: ``run`` is the timed forward pass, ``raw_heads`` the raw head outputs."""

    run: Callable[[], object]
    raw_heads: Callable[[], list[torch.Tensor]]


def load_runner(implementation: str, cfg_path: Path, weights_path: Path, image: np.ndarray) -> Runner:
    """Load one implementation, ready to run forward passes on ``image``."""
    if implementation == "opencv":
        net = cv2.dnn.readNetFromDarknet(str(cfg_path), str(weights_path))
        net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
        output_names = opencv_output_names(net, raw=False)
        raw_names = opencv_output_names(net, raw=True)

        def run_opencv() -> object:
            net.setInput(image)
            return net.forward(output_names)

        def opencv_raw_heads() -> list[torch.Tensor]:
            net.setInput(image)
            return [torch.from_numpy(array) for array in net.forward(raw_names)]

        return Runner(run_opencv, opencv_raw_heads)

    model = load_torch_model(implementation, cfg_path, weights_path)
    tensor = torch.from_numpy(image)
    channels_last = implementation == "fused+channels_last"

    def run_torch() -> list[torch.Tensor]:
        with torch.inference_mode():
            return model(tensor.contiguous(memory_format=torch.channels_last) if channels_last else tensor)

    return Runner(run_torch, run_torch)


def make_matmul_runner(size: int = MATMUL_SIZE) -> Callable[[], object]:
    generator = torch.Generator().manual_seed(SEED)
    left, right = (torch.randn(size, size, generator=generator) for _ in range(2))
    product = torch.empty(size, size)

    def run_matmul() -> object:
        return torch.mm(left, right, out=product)

    return run_matmul


def agreement(runners: dict[str, Runner]) -> dict[str, float]:
    """Max |difference| / max |eager| of the raw head outputs, per implementation, against eager."""
    reference = [head.float() for head in runners["eager"].raw_heads()]
    scale = max(max(head.abs().max().item() for head in reference), 1e-12)
    differences = {}
    for implementation, runner in runners.items():
        if implementation != "eager":
            outputs = runner.raw_heads()
            differences[implementation] = (
                max(
                    (output.float() - expected).abs().max().item()
                    for output, expected in zip(outputs, reference, strict=True)
                )
                / scale
            )
    return differences


# --- measurements ------------------------------------------------------------------------------------


def percentile(values: Sequence[float], fraction: float) -> float:
    return float(np.percentile(np.asarray(values), fraction * 100))


def status_kb(field: str) -> int | None:
    """A ``kB`` field (``VmRSS``, ``VmHWM``) of /proc/self/status; None where there is no /proc."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (VmHWM) to its current RSS (Linux: ``5`` into clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_memory_child(implementation: str, cfg_path: Path, weights_path: Path, size: int, threads: int) -> float:
    """In a fresh process: growth of peak RSS (MB) from after imports to after loading and one forward.

    Linux carries ``ru_maxrss`` over fork and exec, so a spawned child starts with its parent's peak
    (here, the benchmark process with every model loaded). The peak is therefore read from VmHWM, reset
    to the current RSS after the imports; ``ru_maxrss`` is the fallback where /proc is missing.
    """
    set_threads(threads)
    image = make_input(size)
    use_proc = reset_peak_rss() and status_kb("VmHWM") is not None
    baseline_kb = status_kb("VmRSS") if use_proc else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    load_runner(implementation, cfg_path, weights_path, image).run()
    peak_kb = status_kb("VmHWM") if use_proc else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return max(0, peak_kb - baseline_kb) / 1024


def measure_peak_memory(implementation: str, setup: ModelSetup, size: int, threads: int) -> float:
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as executor:
        future = executor.submit(peak_memory_child, implementation, setup.cfg_path, setup.weights_path, size, threads)
        return future.result()


@dataclass(frozen=True)
class ModelMeasurement:
    """The timings of one model's implementations, and what else was measured during them."""

    samples: dict[str, list[float]]
    differences: dict[str, float]
    matmul_gflop_per_second: float
    background_cores: float | None


def benchmark_model(setup: ModelSetup, arguments: argparse.Namespace, image: np.ndarray) -> ModelMeasurement:
    logger.info("%s: loading %d implementations", setup.name, len(IMPLEMENTATIONS))
    runners = {
        implementation: load_runner(implementation, setup.cfg_path, setup.weights_path, image)
        for implementation in IMPLEMENTATIONS
    }
    differences = agreement(runners)
    timed = {implementation: runner.run for implementation, runner in runners.items()}
    timed[MATMUL] = make_matmul_runner()
    logger.info("%s: %d warm-up + %d timed repetitions", setup.name, arguments.warmup, arguments.repeats)
    with CpuMeter() as meter:
        samples = time_interleaved(timed, arguments.warmup, arguments.repeats)
    matmul_rate = 2 * MATMUL_SIZE**3 / statistics.median(samples[MATMUL]) / 1e9
    return ModelMeasurement(samples, differences, matmul_rate, meter.background_cores)


# --- report ------------------------------------------------------------------------------------------


def format_table(rows: Sequence[ResultRow]) -> str:
    header = (
        "| model | implementation | median ms | p90 ms | GFLOP/s | % of matmul peak | peak MB | speed vs OpenCV |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|"
    )
    lines = [header]
    for row in rows:
        peak = "n/a" if row.peak_mb is None else f"{row.peak_mb:.0f}"
        ratio = "n/a" if row.speed_vs_opencv is None else f"{row.speed_vs_opencv:.2f}x"
        lines.append(
            f"| {row.model} | {IMPLEMENTATION_LABELS[row.implementation]} | {row.median_ms:.1f} | {row.p90_ms:.1f} "
            f"| {row.gflop_per_second:.1f} | {row.percent_of_matmul:.0f}% | {peak} | {ratio} |"
        )
    return "\n".join(lines)


def interpretation(rows: Sequence[ResultRow], measurements: dict[str, ModelMeasurement]) -> str:
    """A few sentences read off the table: fastest variant, gap to OpenCV, share of the matmul rate."""
    sentences = []
    for model, measurement in measurements.items():
        model_rows = {row.implementation: row for row in rows if row.model == model}
        best = min((row for name, row in model_rows.items() if name != "opencv"), key=lambda row: row.median_ms)
        opencv, eager, fused = model_rows["opencv"], model_rows["eager"], model_rows["fused"]
        relation = "faster" if best.median_ms < opencv.median_ms else "slower"
        factor = max(best.median_ms, opencv.median_ms) / min(best.median_ms, opencv.median_ms)
        sentences.append(
            f"**{model}**: our fastest variant is *{IMPLEMENTATION_LABELS[best.implementation]}* at "
            f"{best.median_ms:.1f} ms, {factor:.2f}x {relation} than OpenCV ({opencv.median_ms:.1f} ms); "
            f"BN fusion alone takes eager from {eager.median_ms:.1f} to {fused.median_ms:.1f} ms "
            f"({(fused.median_ms / eager.median_ms - 1) * 100:+.0f}%). Our best reaches "
            f"{best.percent_of_matmul:.0f}% of the {measurement.matmul_gflop_per_second:.0f} GFLOP/s fp32 "
            f"matmul rate measured alongside, OpenCV {opencv.percent_of_matmul:.0f}%."
        )
    return "\n\n".join(sentences)


def build_report(
    arguments: argparse.Namespace,
    command: str,
    started: datetime.datetime,
    setups: Sequence[ModelSetup],
    measurements: dict[str, ModelMeasurement],
    rows: Sequence[ResultRow],
) -> str:
    weights = ", ".join(
        f"{setup.name}: {'random (seed 0)' if setup.random_weights else setup.weights_path.name}" for setup in setups
    )
    agreement_text = "; ".join(
        f"{model}: " + ", ".join(f"{name} {value:.1e}" for name, value in measurement.differences.items())
        for model, measurement in measurements.items()
    )
    matmul_text = ", ".join(
        f"{model} {measurement.matmul_gflop_per_second:.1f}" for model, measurement in measurements.items()
    )
    background = [measurement.background_cores for measurement in measurements.values()]
    if any(cores is None for cores in background):
        background_text = "unknown (no /proc/stat)"
    else:
        background_text = ", ".join(
            f"{model} {measurement.background_cores:.2f}" for model, measurement in measurements.items()
        )
        if max(background) > BUSY_BACKGROUND_CORES:
            background_text += (
                " cores. **Other processes used the CPU during the timings; treat the figures as indicative "
                "and re-run on an idle machine.**"
            )
        else:
            background_text += " cores (an idle machine)."
    lines = [
        f"- Machine: {cpu_name()}, {os.cpu_count()} logical cores "
        f"(torch CPU capability {torch.backends.cpu.get_cpu_capability()}); Python {platform.python_version()}, "
        f"torch {torch.__version__}, OpenCV {cv2.__version__}",
        f"- Threads: {arguments.threads} (torch.set_num_threads and cv2.setNumThreads)",
        f"- Command: `{command}`",
        f"- Date: {started:%Y-%m-%d %H:%M} UTC",
        f"- Background CPU use by other processes during each model's timed runs: {background_text}",
        f"- Input {arguments.size}x{arguments.size}, batch 1, fp32; {arguments.warmup} warm-up + "
        f"{arguments.repeats} timed runs per implementation, interleaved in rotating order; weights: {weights}",
        f"- fp32 matmul rate (torch.mm {MATMUL_SIZE}x{MATMUL_SIZE}, timed in the same rotation as each model's "
        f"implementations, median GFLOP/s): {matmul_text}",
        f"- Output agreement with eager (max |diff| / max |eager| over the raw heads): {agreement_text}",
        "",
        format_table(rows),
        "",
        "GFLOP/s = the model's conv FLOPs (Darknet's BFLOPs: "
        + ", ".join(f"{setup.name} {setup.gflop:.3f}" for setup in setups)
        + ") / median latency; % of matmul peak = that / the matmul rate measured alongside the same model "
        "(a reference, not a ceiling: torch.mm runs MKL's sgemm while the convs run oneDNN or OpenCV's own "
        "kernels, which can be faster, so figures above 100% are possible). "
        "Peak MB = growth of peak RSS in a fresh child process, from after the imports to after loading the "
        "weights and one forward pass (read from VmHWM: a spawned child's `ru_maxrss` starts at its "
        "parent's peak); it includes reading the weights file and, for the fused variants, the unfused "
        "model that `fuse_conv_bn` copies from. Speed vs OpenCV = OpenCV's median / this median (above 1 "
        "is faster than OpenCV).",
        "",
        interpretation(rows, measurements),
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    start = start_bench("forward_cpu", argv)
    arguments = parse_arguments(start.argv)
    set_threads(arguments.threads)
    image = make_input(arguments.size)
    real_weights = {"yolov3-tiny": arguments.weights_tiny, "yolov3": arguments.weights_yolov3}

    setups: list[ModelSetup] = []
    measurements: dict[str, ModelMeasurement] = {}
    rows: list[ResultRow] = []
    with tempfile.TemporaryDirectory(prefix="forward_cpu_") as temporary:
        for name in arguments.models:
            cfg_path = arguments.shared / MODEL_CFGS[name]
            weights_path = real_weights[name]
            if weights_path is None:
                weights_path = Path(temporary) / f"{name}-random.weights"
                logger.info("%s: writing random weights to %s", name, weights_path)
                write_random_weights(cfg_path, weights_path)
            setup = ModelSetup(
                name, cfg_path, weights_path, real_weights[name] is None, model_gflop(cfg_path, arguments.size)
            )
            setups.append(setup)
            measurements[name] = benchmark_model(setup, arguments, image)
            gc.collect()

        for setup in setups:
            measurement = measurements[setup.name]
            opencv_median = statistics.median(measurement.samples["opencv"])
            for implementation in IMPLEMENTATIONS:
                peak_mb = None
                if not arguments.no_memory:
                    logger.info("%s / %s: measuring peak memory in a child process", setup.name, implementation)
                    peak_mb = measure_peak_memory(implementation, setup, arguments.size, arguments.threads)
                samples = measurement.samples[implementation]
                median = statistics.median(samples)
                rate = setup.gflop / median
                rows.append(
                    ResultRow(
                        model=setup.name,
                        implementation=implementation,
                        median_ms=median * 1e3,
                        p90_ms=percentile(samples, 0.9) * 1e3,
                        gflop_per_second=rate,
                        percent_of_matmul=100 * rate / measurement.matmul_gflop_per_second,
                        peak_mb=peak_mb,
                        speed_vs_opencv=opencv_median / median,
                    )
                )

    report = build_report(arguments, start.command, start.started, setups, measurements, rows)
    print_and_record(report, arguments.record, arguments.docs, SECTION_TITLE, NOTES_MARKER)
    return 0


if __name__ == "__main__":
    sys.exit(main())
