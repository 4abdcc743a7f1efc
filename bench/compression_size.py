"""On-disk size of Deep Compression's storage (:mod:`yolov3.compression.storage`) for YOLOv3 and YOLOv3-tiny.

For each model (80 classes), in one run:

* weights are random but shaped like trained ones: every conv's weights are drawn from a **Laplace**
  distribution (trained weights are closer to Laplacian than to the uniform/normal initialisations) with the
  He standard deviation ``sqrt(2 / fan_in)``; batch-norm scales ~ U(0.5, 1.5), shifts and running means
  ~ N(0, 0.5), running variances ~ LogNormal(0, 0.5), head biases ~ N(0, 1). The size depends on the weight
  *distribution*, not on the values being trained, but it is still a stand-in for a trained checkpoint;
* global magnitude pruning to ``--sparsity`` of all convs but the first and the heads' outputs
  (``yolov3.compression.prune_to_sparsity``), then weight sharing with ``k = 2**bits`` centroids on every
  conv but the first (linear init, as ``python -m yolov3.compress`` does by default);
* the file is written by ``write_compressed`` (relative positions of ``--position-bits``, both index
  streams Huffman-coded when that is smaller, float16 codebooks / biases / batch norm after
  ``round_to_float16``), read back, and checked tensor for tensor;
* its size is compared with the fp32 Darknet ``.weights`` file of the same model (20 + 4 * floats bytes:
  248,007,048 for YOLOv3), and, for YOLOv3, with variants that show where the bytes go (8-bit positions, no
  Huffman coding, float32 codebooks and batch norm).

``--record`` writes the report into the "Compression: storage (issue 6)" section of ``docs/benchmarks.md``.

Usage::

    python bench/compression_size.py                 # print the report
    python bench/compression_size.py --record        # ... and record it in docs/benchmarks.md
    python bench/compression_size.py --models yolov3-tiny --sparsity 0.9 --bits 5
"""

from __future__ import annotations

import argparse
import datetime
import logging
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from common import cpu_name, start_bench
from docs_section import print_and_record
from yolov3.compression.masks import finalize_pruning, prunable_layers, prune_to_sparsity
from yolov3.compression.report import CompressionReport
from yolov3.compression.sharing import SharedWeights, share_weights
from yolov3.compression.storage import load_compressed, round_to_float16, write_compressed
from yolov3.models import create_model

logger = logging.getLogger("bench.compression_size")

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DOCS = REPOSITORY_ROOT / "docs" / "benchmarks.md"
SECTION_TITLE = "## Compression: storage (issue 6)"
MODELS = {"yolov3": "yolov3", "yolov3-tiny": "yolov3_tiny"}
TARGET_RATIO = 20.0
LARGEST_LAYERS = 8


def parse_arguments(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["yolov3", "yolov3-tiny"])
    parser.add_argument("--sparsity", type=float, default=0.8, help="global sparsity of the pruned convs")
    parser.add_argument("--bits", type=int, default=4, help="bits per cluster index (k = 2**bits)")
    parser.add_argument("--position-bits", type=int, default=4, help="bits per relative position")
    parser.add_argument("--weights-tiny", type=Path, help="also the official (trained) yolov3-tiny.weights")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-variants", action="store_true", help="skip the YOLOv3 variants (faster)")
    parser.add_argument("--record", action="store_true", help=f"write the report into {DEFAULT_DOCS}")
    parser.add_argument("--docs", type=Path, default=DEFAULT_DOCS, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


@torch.no_grad()
def trained_like_weights(model: nn.Module, generator: torch.Generator) -> None:
    """Laplace conv weights with the He standard deviation, plausible batch-norm parameters and biases."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            fan_in = module.weight[0].numel()
            scale = math.sqrt(1.0 / fan_in)  # Laplace(0, b) has std b*sqrt(2) = sqrt(2 / fan_in)
            uniform = torch.rand(module.weight.shape, generator=generator, dtype=torch.float64) - 0.5
            laplace = -scale * torch.sign(uniform) * torch.log1p(-2 * uniform.abs())  # inverse CDF
            module.weight.copy_(laplace.to(torch.float32))
            if module.bias is not None:
                module.bias.copy_(torch.randn(module.bias.shape, generator=generator))
        elif isinstance(module, nn.BatchNorm2d):
            channels = module.num_features
            module.weight.copy_(torch.rand(channels, generator=generator) + 0.5)
            module.bias.copy_(0.5 * torch.randn(channels, generator=generator))
            module.running_mean.copy_(0.5 * torch.randn(channels, generator=generator))
            module.running_var.copy_(torch.exp(0.5 * torch.randn(channels, generator=generator)))


@dataclass
class Measurement:
    """One file written for a model: its variant, its report, and the seconds to write and to read it."""

    model: str
    variant: str
    report: CompressionReport
    write_seconds: float
    read_seconds: float | None


def write_and_check(
    model: nn.Module, shared: SharedWeights, spec: dict, directory: str, check: bool, **options: object
) -> tuple[CompressionReport, float, float | None]:
    """Write the file; with ``check``, read it back and compare every tensor of the state dict."""
    path = Path(directory) / "model.yolov3c"
    start = time.perf_counter()
    report = write_compressed(path, model, shared, model_spec=spec, **options)
    write_seconds = time.perf_counter() - start
    if not check:
        return report, write_seconds, None
    start = time.perf_counter()
    restored = load_compressed(path).model
    read_seconds = time.perf_counter() - start
    expected = model.state_dict()
    for key, value in restored.state_dict().items():
        if not torch.equal(value, expected[key]):
            raise AssertionError(f"{key} differs after the round trip")
    assert path.stat().st_size == report.file_bytes
    return report, write_seconds, read_seconds


def measure_model(
    name: str, arguments: argparse.Namespace, directory: str, weights: Path | None = None
) -> tuple[list[Measurement], str]:
    """Prune, share and write one model (Laplace weights, or a Darknet ``weights`` file); variants for yolov3."""
    torch.manual_seed(arguments.seed)
    spec = {"name": MODELS[name], "kwargs": {"num_classes": 80}}
    model = create_model(spec["name"], **spec["kwargs"])
    if weights is None:
        trained_like_weights(model, torch.Generator().manual_seed(arguments.seed))
    else:
        model.load_darknet_weights(weights)
        name = f"{name} (official weights)"
    logger.info("%s: pruning to %.0f%% and sharing with k=%d", name, 100 * arguments.sparsity, 2**arguments.bits)
    start = time.perf_counter()
    prune_to_sparsity(model, arguments.sparsity, "global", prunable_layers(model))
    finalize_pruning(model)
    prune_seconds = time.perf_counter() - start
    start = time.perf_counter()
    shared = share_weights(model, arguments.bits, layers=prunable_layers(model, skip=("first",)))
    share_seconds = time.perf_counter() - start
    measurements = []
    variants = not arguments.no_variants and name == "yolov3"
    if variants:  # before round_to_float16: everything float32
        options = {"position_bits": arguments.position_bits, "float_format": "float32"}
        report, seconds, _ = write_and_check(model, shared, spec, directory, False, **options)
        measurements.append(Measurement(name, "float32 codebooks / batch norm / biases", report, seconds, None))
    round_to_float16(model, shared)
    options = {"position_bits": arguments.position_bits}
    report, write_seconds, read_seconds = write_and_check(model, shared, spec, directory, True, **options)
    measurements.insert(0, Measurement(name, "default", report, write_seconds, read_seconds))
    if variants:
        other_bits = 8 if arguments.position_bits != 8 else 4
        for variant, options in (
            (f"{other_bits}-bit relative positions", {"position_bits": other_bits}),
            ("no Huffman coding (fixed-width indices)", {"position_bits": arguments.position_bits, "coding": "raw"}),
        ):
            report, seconds, _ = write_and_check(model, shared, spec, directory, False, **options)
            measurements.append(Measurement(name, variant, report, seconds, None))
    timings = f"prune {prune_seconds:.1f} s, k-means {share_seconds:.1f} s"
    return measurements, timings


def build_report(arguments: argparse.Namespace, command: str, started: datetime.datetime,
                 results: dict[str, tuple[list[Measurement], str]]) -> str:  # fmt: skip
    lines = [
        f"- Machine: {cpu_name()}, {os.cpu_count()} logical cores; Python {platform.python_version()}, "
        f"torch {torch.__version__}",
        f"- Command: `{command}`",
        f"- Date: {started:%Y-%m-%d %H:%M} UTC",
        "- Models: 80 classes, **random weights drawn per conv from a Laplace distribution** (He std) as a "
        "stand-in for trained weights (and, with `--weights-tiny`, the official COCO yolov3-tiny.weights); "
        f"{arguments.sparsity:.0%} global magnitude sparsity of all convs but the "
        f"first and the heads' outputs; weight sharing with k = {2**arguments.bits} on every conv but the first "
        f"(linear init); {arguments.position_bits}-bit relative positions; Huffman coding where smaller; "
        "float16 codebooks / biases / batch norm (`round_to_float16`, exact in the file)",
        "",
        "| model | variant | file bytes | fp32 .weights bytes | ratio | shared layers | dense tensors | header "
        "| write s | read s |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for measurements, _ in results.values():
        for item in measurements:
            report = item.report
            read = f"{item.read_seconds:.1f}" if item.read_seconds is not None else "-"
            lines.append(
                f"| {item.model} | {item.variant} | {report.file_bytes:,} | {report.darknet_bytes:,} "
                f"| **{report.ratio:.1f}x** | {report.shared_bytes:,} | {report.dense_bytes:,} "
                f"| {report.header_bytes:,} | {item.write_seconds:.1f} | {read} |"
            )
    for name, (measurements, timings) in results.items():
        report = measurements[0].report
        verdict = "meets" if report.ratio >= TARGET_RATIO else "misses"
        largest = LARGEST_LAYERS if len(report.layers) > 2 * LARGEST_LAYERS else None
        which = f"the {LARGEST_LAYERS} largest layers and the total" if largest else "every shared layer"
        lines += [
            "",
            f"**{name}**: {report.file_bytes:,} bytes, {report.ratio:.1f}x smaller than the fp32 `.weights` "
            f"({verdict} the {TARGET_RATIO:.0f}x target); read back tensor for tensor identical. {timings}. "
            f"{report.summary()}. Per-layer ({which}):",
            "",
            report.format_table(largest).split("\n\n")[0],
        ]
        if len(measurements) > 1:
            lines += ["", where_the_bytes_go(measurements)]
    return "\n".join(lines) + "\n"


def where_the_bytes_go(measurements: list[Measurement]) -> str:
    """What each variant changes against the default file, in words."""
    default = measurements[0].report
    total = default.shared_total()
    parts = [
        f"Where the bytes go: the index streams cost {total.coded_index_bits / total.nonzero:.2f} bits per non-zero "
        f"weight as written ({total.raw_index_bits / total.nonzero:.2f} at fixed width: {total.cluster_bits}-bit "
        f"cluster indices plus {total.position_bits}-bit positions, {total.fillers:,} of them fillers), "
        f"{total.coded_index_bits / 8 / default.file_bytes:.0%} of the file"
    ]
    for item in measurements[1:]:
        change = item.report.file_bytes / default.file_bytes - 1
        parts.append(f"{item.variant}: {item.report.ratio:.1f}x ({change:+.1%} bytes)")
    return "; ".join(parts) + "."


def main(argv: Sequence[str] | None = None) -> int:
    start = start_bench("compression_size", argv)
    arguments = parse_arguments(start.argv)
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench_compression_") as directory:
        for name in arguments.models:
            results[name] = measure_model(name, arguments, directory)
        if arguments.weights_tiny is not None:
            results["yolov3-tiny (official weights)"] = measure_model(
                "yolov3-tiny", arguments, directory, arguments.weights_tiny
            )
    report = build_report(arguments, start.command, start.started, results)
    print_and_record(report, arguments.record, arguments.docs, SECTION_TITLE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
