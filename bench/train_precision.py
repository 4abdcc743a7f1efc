"""Training precision on this CPU beside pytorchyolo; torch.compile for training and inference (issue 12).

Three modes, each recording its own section of ``docs/benchmarks.md`` with ``--record``:

* default, "Training precision (issue 12)": one process times full training steps side by side,
  interleaved in a rotating order so that background load hits every row alike: yolov3-tiny, batch 8,
  416x416, SGD, random images and 8 random boxes per image (80 classes). Rows: pytorchyolo 1.8.0's fp32
  step (its ``Darknet`` on the official cfg, its own ``compute_loss``, backward, SGD), an optional peer
  installed outside the project's dependencies; ours through the library's own
  :class:`~yolov3.train.step.StepRunner` in fp32 and bf16 autocast, NCHW and channels_last, and bf16
  channels_last with ``torch.compile(model)`` (inductor), whose warm-up (compile) time is reported apart
  from its steady-state step, with the break-even step count against the same step uncompiled.
* ``--inference``, "Inference with torch.compile (issue 12)": yolov3 at 416, batch 1, eval forward as
  :func:`yolov3.inference.precision.prepare_for_inference` prepares it for bf16 (BN fused, channels_last,
  autocast), eager and under ``torch.compile`` (with and without inductor's weight freezing).
* ``--loader``, "Data loader vs training step (issue 12)": the real training pipeline of a config
  (default ``configs/bccd.yaml``: BCCD JPEGs, mosaic 0.5, 416, batch 8, 2 workers) alone, the config's
  training step (bf16 + channels_last there) on one pre-loaded batch, and the same steps fed by the loader.

Usage::

    python bench/train_precision.py --record                 # training rows, recorded
    python bench/train_precision.py --inference --record     # inference compile trial, recorded
    python bench/train_precision.py --loader --record        # loader vs step on BCCD, recorded
    python bench/train_precision.py --size 128 --batch 2 --repeats 1 --warmup 1 --no-compile   # a smoke run

The peer, for the benchmark only (``--no-peer`` leaves it out)::

    pip download --no-deps pytorchyolo==1.8.0 -d /tmp/peer && pip install --no-deps /tmp/peer/*.whl

Its ``pytorchyolo.utils.utils`` imports imgaug for ``provide_determinism`` alone, which is not called here;
imgaug 0.4 does not import under NumPy 2, so where it is missing an empty module stands in for it.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import importlib.metadata
import importlib.util
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from common import (
    BUSY_BACKGROUND_CORES,
    CpuMeter,
    cpu_name,
    endless,
    load_bench_module,
    random_targets,
    start_bench,
    time_interleaved,
)
from docs_section import record_section
from yolov3.data.collate import Batch
from yolov3.data.dataset_config import build_dataset
from yolov3.data.loader import build_train_loader
from yolov3.hardware import native_bf16, resolve_amp
from yolov3.inference.precision import InferenceModel, prepare_for_inference
from yolov3.loss import YoloLoss
from yolov3.models import create_model
from yolov3.train.config import load_train_config
from yolov3.train.ema import build_ema
from yolov3.train.memory_format import to_channels_last
from yolov3.train.optimizer import OptimizerConfig, build_optimizer
from yolov3.train.step import StepRunner

logger = logging.getLogger("bench.train_precision")

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DOCS = REPOSITORY_ROOT / "docs" / "benchmarks.md"
DEFAULT_SHARED = REPOSITORY_ROOT.parent / "shared" / "darknet"
TRAINING_SECTION = "## Training precision (issue 12)"
INFERENCE_SECTION = "## Inference with torch.compile (issue 12)"
LOADER_SECTION = "## Data loader vs training step (issue 12)"
NOTES_MARKER = "<!-- notes: kept when bench/train_precision.py --record rewrites this section -->"
MODELS = {"yolov3-tiny": ("yolov3_tiny", "yolov3-tiny.cfg"), "yolov3": ("yolov3", "yolov3.cfg")}
PEER_VERSION = "1.8.0"
PEER_INSTALL = (
    f"pip download --no-deps pytorchyolo=={PEER_VERSION} -d /tmp/peer && pip install --no-deps /tmp/peer/*.whl"
)
PEER_NET_DEFAULTS = {  # [net] keys pytorchyolo requires that the project's own cfgs may leave out
    "momentum": "0.9",
    "decay": "0.0005",
    "learning_rate": "0.001",
    "burn_in": "1000",
    "max_batches": "500200",
    "policy": "steps",
    "steps": "400000,450000",
    "scales": "0.1,0.1",
}
TRAINING_TARGET = 0.45  # issue 12: our fastest training step at most this fraction of pytorchyolo's fp32 step
LOADER_TARGET = 1.5  # issue 12: the loader delivers at least this many times the images the step consumes


@dataclass(frozen=True)
class Variant:
    """One of our training configurations."""

    key: str
    label: str
    amp: str
    channels_last: bool
    compile: bool = False


VARIANTS = (
    Variant("fp32", "ours fp32, NCHW", "none", False),
    Variant("fp32-cl", "ours fp32, channels_last", "none", True),
    Variant("bf16", "ours bf16 autocast, NCHW", "bf16", False),
    Variant("bf16-cl", "ours bf16 autocast, channels_last", "bf16", True),
    Variant("bf16-cl-compile", "ours bf16 autocast, channels_last, torch.compile", "bf16", True, True),
)
PEER_KEY = "peer"


def parse_arguments(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python bench/train_precision.py", description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--inference", action="store_true", help="the inference torch.compile trial instead")
    mode.add_argument("--loader", action="store_true", help="the data loader against the training step instead")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), help="default yolov3-tiny (--inference: yolov3)")
    parser.add_argument("--batch", type=int, help="default 8 (--inference: 1)")
    parser.add_argument("--size", type=int, default=416, help="input height and width (default 416)")
    parser.add_argument("--repeats", type=int, default=10, help="timed runs per row (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs per row first (default 2)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads (default all)")
    parser.add_argument("--no-compile", action="store_true", help="leave out the torch.compile rows")
    parser.add_argument("--no-peer", action="store_true", help="leave out pytorchyolo's row")
    parser.add_argument(
        "--compile-cache",
        type=Path,
        help="inductor's cache folder (default: a fresh temporary one, so that the compile time is a cold start's)",
    )
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED, help="folder with the official cfgs")
    parser.add_argument(
        "--job-steps",
        type=int,
        default=750,
        help="training steps of the job compile must pay off in (default 750: configs/bccd.yaml, 30 epochs of 25)",
    )
    loader = parser.add_argument_group("--loader")
    loader.add_argument(
        "--cfg", type=Path, default=Path("configs/bccd.yaml"), help="training config (default %(default)s)"
    )
    loader.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config overrides")
    loader.add_argument("--batches", type=int, default=30, help="timed loader batches (default 30)")
    loader.add_argument("--steps", type=int, default=30, help="timed steps of each kind (default 30)")
    loader.add_argument("--rounds", type=int, default=2, help="alternating blocks of ready / fed steps (default 2)")
    parser.add_argument("--record", action="store_true", help=f"write the report into {DEFAULT_DOCS.name}")
    parser.add_argument("--docs", type=Path, default=DEFAULT_DOCS, help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    arguments.models = arguments.models or (["yolov3"] if arguments.inference else ["yolov3-tiny"])
    arguments.batch = arguments.batch or (1 if arguments.inference else 8)
    if arguments.repeats < 1 or arguments.warmup < 0 or arguments.threads < 1 or arguments.size % 32:
        parser.error("need --repeats >= 1, --warmup >= 0, --threads >= 1 and --size a multiple of 32")
    if arguments.steps < arguments.rounds or arguments.batches < 1 or arguments.rounds < 1:
        parser.error("need --batches >= 1, --rounds >= 1 and --steps >= --rounds")
    return arguments


def timed_calls(function: Callable[[], object], count: int) -> list[float]:
    seconds = []
    for _ in range(count):
        start = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - start)
    return seconds


@dataclass
class Row:
    """One row's timings: its warm-up calls (compile included) and its interleaved timed calls."""

    key: str
    label: str
    warmup: list[float] = field(default_factory=list)
    samples: list[float] = field(default_factory=list)
    missing: str = ""  # why the row was not measured
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def overhead(self) -> float:
        """Warm-up time beyond the steady state: the compile time, for a compiled row."""
        return sum(self.warmup) - len(self.warmup) * self.median


def time_rows(rows: dict[str, Row], runners: dict[str, Callable[[], object]], warmup: int, repeats: int):
    """Each runner's warm-up calls one by one (compile rows at least 2), then all interleaved, rotating."""
    for key, runner in runners.items():
        count = max(warmup, 2) if "compile" in key else warmup
        logger.info("%s: %d warm-up call(s)", rows[key].label, count)
        graphs = compiled_graphs()
        rows[key].warmup = timed_calls(runner, count)
        if "compile" in key:
            rows[key].note = f"{compiled_graphs() - graphs} graph(s) compiled in the warm-up"
    logger.info("%d timed calls of %d rows, interleaved", repeats, len(runners))
    graphs = compiled_graphs()
    with CpuMeter() as meter:
        samples = time_interleaved(runners, 0, repeats)
    if compiled_graphs() != graphs:
        logger.warning("%d graph(s) recompiled during the timed calls", compiled_graphs() - graphs)
    for key, seconds in samples.items():
        rows[key].samples = seconds
    return meter.background_cores


def compiled_graphs() -> int:
    """Graphs dynamo has compiled in this process so far."""
    return torch._dynamo.utils.counters["stats"]["unique_graphs"]


# --- training ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Peer:
    darknet: type
    compute_loss: Callable
    version: str
    stubbed_imgaug: bool


def load_peer() -> tuple[Peer | None, str]:
    """pytorchyolo's model and loss, or None and why not (with how to install it)."""
    if importlib.util.find_spec("pytorchyolo") is None:
        return None, f"pytorchyolo is not installed; for the benchmark only: `{PEER_INSTALL}`"
    stubbed = importlib.util.find_spec("imgaug") is None
    if stubbed:  # imported by pytorchyolo.utils.utils for provide_determinism() only, which is not called here
        sys.modules["imgaug"] = types.ModuleType("imgaug")
    try:
        from pytorchyolo.models import Darknet
        from pytorchyolo.utils.loss import compute_loss
    except ImportError as error:
        return None, f"pytorchyolo cannot be imported ({error}); reinstall it with `{PEER_INSTALL}`"
    return Peer(Darknet, compute_loss, importlib.metadata.version("pytorchyolo"), stubbed), ""


def peer_cfg(name: str, shared: Path, temporary: Path) -> Path:
    """The official cfg from ``shared``, else the project's ``darknet/`` one with the [net] keys pytorchyolo needs."""
    official = shared / MODELS[name][1]
    if official.is_file():
        return official
    ours = REPOSITORY_ROOT / "darknet" / MODELS[name][1]
    lines = ours.read_text().splitlines()
    net = next(index for index, line in enumerate(lines) if line.strip() == "[net]")
    end = next((i for i in range(net + 1, len(lines)) if lines[i].startswith("[")), len(lines))
    present = {line.split("=", 1)[0].strip() for line in lines[net + 1 : end] if "=" in line}
    added = [f"{key}={value}" for key, value in PEER_NET_DEFAULTS.items() if key not in present]
    path = temporary / ours.name
    path.write_text("\n".join(lines[: net + 1] + added + lines[net + 1 :]) + "\n")
    return path


def peer_step(peer: Peer, cfg: Path, images: torch.Tensor, targets: torch.Tensor) -> Callable[[], None]:
    """pytorchyolo's training step as its train.py runs it: forward, compute_loss, backward, SGD step."""
    torch.manual_seed(0)
    model = peer.darknet(str(cfg)).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, weight_decay=5e-4)

    def step() -> None:
        outputs = model(images)  # [(B, A, H, W, 5 + C), ...]
        loss, _ = peer.compute_loss(outputs, targets, model)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    return step


def our_step(name: str, variant: Variant, images: torch.Tensor, targets: torch.Tensor, row: Row) -> Callable:
    """Our training step through StepRunner (YoloLoss, SGD) in ``variant``'s precision and memory format."""
    torch.manual_seed(0)
    model = create_model(MODELS[name][0]).train()
    if variant.channels_last:
        to_channels_last(model)  # as the trainer does; the batch follows from the first NHWC convolution
    optimizer = build_optimizer(model, OptimizerConfig(name="sgd", learning_rate=1e-4))
    network = torch.compile(model) if variant.compile else model
    runner = StepRunner(network, YoloLoss(model.head_specs), optimizer, amp=variant.amp)
    dropped = 0

    def step() -> None:
        nonlocal dropped
        if runner.micro_step(images, targets).dropped:  # a non-finite loss skips backward: the time would lie
            dropped += 1
            row.note = f"{dropped} step(s) dropped for a non-finite loss"

    return step


def training_rows(arguments: argparse.Namespace, name: str, temporary: Path) -> tuple[list[Row], float]:
    images = torch.rand(arguments.batch, 3, arguments.size, arguments.size, generator=torch.Generator().manual_seed(0))
    targets = random_targets(arguments.batch, 8, 80, torch.Generator().manual_seed(0))
    rows: dict[str, Row] = {}
    runners: dict[str, Callable[[], object]] = {}
    peer_label = f"pytorchyolo {PEER_VERSION} fp32 (its Darknet + compute_loss)"
    if arguments.no_peer:
        rows[PEER_KEY] = Row(PEER_KEY, peer_label, missing="left out (--no-peer)")
    else:
        peer, reason = load_peer()
        if peer is None:
            logger.warning("peer row missing: %s", reason)
            rows[PEER_KEY] = Row(PEER_KEY, peer_label, missing=reason)
        else:
            cfg = peer_cfg(name, arguments.shared, temporary)
            stub = "; imgaug stubbed (unused)" if peer.stubbed_imgaug else ""
            rows[PEER_KEY] = Row(
                PEER_KEY, f"pytorchyolo {peer.version} fp32 (its Darknet + compute_loss)", note=f"cfg {cfg.name}{stub}"
            )
            runners[PEER_KEY] = peer_step(peer, cfg, images, targets)
    for variant in VARIANTS:
        if variant.compile and arguments.no_compile:
            continue
        rows[variant.key] = Row(variant.key, variant.label)
        runners[variant.key] = our_step(name, variant, images, targets, rows[variant.key])
    background = time_rows(rows, runners, arguments.warmup, arguments.repeats)
    return list(rows.values()), background


def ratio(row: Row, reference: Row | None) -> str:
    if reference is None or reference.missing or row.missing:
        return "-"
    return f"{row.median / reference.median:.2f}x"


def compile_summary(compiled: Row, eager: Row, unit: str, job_steps: int | None = None) -> str:
    """Compile time, break-even count and (given ``job_steps``) the net effect of ``compiled`` against ``eager``."""
    saving = eager.median - compiled.median
    text = (
        f"torch.compile: first {unit} {compiled.warmup[0]:.1f} s, compile overhead {compiled.overhead:.1f} s "
        f"(warm-up {unit}s beyond the steady state), steady state {compiled.median * 1000:.0f} ms against "
        f"{eager.median * 1000:.0f} ms uncompiled ({compiled.median / eager.median:.2f}x)"
    )
    if saving <= 0:
        return text + "; never pays off (not faster once compiled)."
    if job_steps is None:
        return text + f"; breaks even after {compiled.overhead / saving:.0f} {unit}s."
    net = job_steps * saving - compiled.overhead
    verdict = "saves" if net > 0 else "costs"
    return (
        text + f"; breaks even after {compiled.overhead / saving:.0f} {unit}s; over {job_steps} {unit}s it {verdict} "
        f"{abs(net):.0f} s ({abs(net) / (job_steps * eager.median):.0%} of the uncompiled time)."
    )


def training_table(rows: Sequence[Row], batch: int) -> str:
    by_key = {row.key: row for row in rows}
    peer, fp32 = by_key.get(PEER_KEY), by_key.get("fp32")
    lines = [
        "| implementation | step ms (median) | images/s | vs pytorchyolo fp32 | vs our fp32 | first step s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        if row.missing:
            lines.append(f"| {row.label} | missing: {row.missing} | - | - | - | - |")
            continue
        first = f"{row.warmup[0]:.2f}" if row.warmup else "-"
        label = row.label + (f" ({row.note})" if row.note else "")
        lines.append(
            f"| {label} | {row.median * 1000:.0f} | {batch / row.median:.2f} | {ratio(row, peer)} | "
            f"{ratio(row, fp32)} | {first} |"
        )
    return "\n".join(lines)


def training_verdict(rows: Sequence[Row], job_steps: int) -> str:
    by_key = {row.key: row for row in rows}
    peer = by_key[PEER_KEY]
    sentences = []
    # The trainer's default (train.amp auto -> bf16 here, train.channels_last true); else our fastest row.
    ours = [row for row in rows if row.key != PEER_KEY]
    default = by_key.get("bf16-cl") or min(ours, key=lambda row: row.median)
    if not peer.missing:
        met = "met" if default.median / peer.median <= TRAINING_TARGET else "**not met**"
        sentences.append(
            f"Issue 12 target, our step <= {TRAINING_TARGET}x pytorchyolo's fp32 step: {default.label} "
            f"{default.median / peer.median:.2f}x ({met})."
        )
    if "bf16-cl-compile" in by_key and "bf16-cl" in by_key:
        sentences.append(compile_summary(by_key["bf16-cl-compile"], by_key["bf16-cl"], "step", job_steps))
    return " ".join(sentences)


# --- inference --------------------------------------------------------------------------------------------


def inference_rows(arguments: argparse.Namespace, name: str) -> tuple[list[Row], dict, float]:
    """bf16 prepared model eager, compiled, and compiled with freezing; their max |Δ| against eager."""
    torch.manual_seed(0)
    model = create_model(MODELS[name][0]).eval()
    images = torch.rand(arguments.batch, 3, arguments.size, arguments.size, generator=torch.Generator().manual_seed(0))
    rows = {"eager": Row("eager", "bf16 autocast, BN fused, channels_last (prepare_for_inference)")}
    prepared = {"eager": prepare_for_inference(model, "bf16")}
    if not arguments.no_compile:
        # Separate options make separate backends, so that dynamo compiles each row rather than reusing a graph.
        for key, label, options in (
            ("compile", "+ torch.compile", None),
            ("compile-freezing", "+ torch.compile, inductor freezing", {"freezing": True}),
        ):
            rows[key] = Row(key, label)
            base = prepare_for_inference(model, "bf16")
            prepared[key] = InferenceModel(torch.compile(base.model, options=options), base.settings)

    def runner(key: str) -> Callable[[], list[torch.Tensor]]:
        def run() -> list[torch.Tensor]:
            with torch.no_grad():
                return prepared[key](images)

        return run

    runners = {key: runner(key) for key in rows}
    background = time_rows(rows, runners, arguments.warmup, arguments.repeats)
    reference = runners["eager"]()
    scale = max(max(head.abs().max().item() for head in reference), 1e-12)
    differences = {}
    for key, run in runners.items():
        pairs = zip(run(), reference, strict=True)
        differences[key] = max((output - head).abs().max().item() for output, head in pairs) / scale
    return list(rows.values()), differences, background


def inference_table(results: Sequence[tuple[str, list[Row], dict]]) -> str:
    lines = [
        "| model | implementation | ms (median) | vs eager | first call s | compile overhead s | "
        "max abs diff / max abs eager |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, rows, differences in results:
        eager = rows[0]
        for row in rows:
            first = f"{row.warmup[0]:.1f}" if row.warmup else "-"
            overhead = f"{row.overhead:.1f}" if row.key != "eager" else "-"
            label = row.label + (f" ({row.note})" if row.note else "")
            lines.append(
                f"| {name} | {label} | {row.median * 1000:.1f} | {row.median / eager.median:.2f}x | {first} | "
                f"{overhead} | {differences[row.key]:.1e} |"
            )
    return "\n".join(lines)


# --- loader -----------------------------------------------------------------------------------------------


def images_per_second(batch_sizes: Sequence[int], seconds: Sequence[float]) -> float:
    """Images over the total time (batches from several workers arrive unevenly, so not from the median)."""
    return sum(batch_sizes) / sum(seconds)


def loader_measurements(arguments: argparse.Namespace) -> dict:
    config = load_train_config(arguments.cfg, arguments.set)
    data = config.data
    dataset = build_dataset(data.dataset, "train", progress=False)
    loader = build_train_loader(
        dataset, data.augment, data.batch_size, data.workers, data.multiscale, config.seed, data.image_size
    )
    amp = resolve_amp(config.train.amp, "cpu")
    model = create_model(config.model.name, num_classes=len(dataset.class_names), **config.model.options).train()
    if config.train.channels_last:
        to_channels_last(model)
    runner = StepRunner(
        model,
        YoloLoss(model.head_specs, config.loss),
        build_optimizer(model, config.optimizer),
        amp=amp.mode,
        grad_clip_norm=config.train.grad_clip_norm,
        ema=build_ema(model, config.train.ema_decay) if config.train.ema else None,
    )
    batches = endless(loader)
    prefetched = 2 * data.workers  # prefetch_factor 2 per worker: batches that were ready before the clock started

    logger.info("loader alone: %d untimed + %d timed batches", prefetched + 1, arguments.batches)
    for _ in range(prefetched + 1):  # worker start-up and the batches prefetched meanwhile
        ready = next(batches)
    loader_seconds, loader_sizes = [], []
    for _ in range(arguments.batches):
        start = time.perf_counter()
        batch = next(batches)
        loader_seconds.append(time.perf_counter() - start)
        loader_sizes.append(len(batch))

    ready = copy.deepcopy(ready)  # one real batch, held in memory

    def run(batch: Batch) -> None:
        runner.micro_step(batch.images, batch.targets)

    ready_seconds, fed_seconds, fed_sizes, wait_seconds = [], [], [], []
    per_block = arguments.steps // arguments.rounds
    for round_number in range(arguments.rounds):
        logger.info(
            "steps, round %d of %d: %d on the ready batch, then fed", round_number + 1, arguments.rounds, per_block
        )
        timed_calls(lambda: run(ready), arguments.warmup)
        ready_seconds += timed_calls(lambda: run(ready), per_block)
        for _ in range(prefetched):  # drain what the workers queued while the ready steps ran
            run(next(batches))
        for _ in range(per_block):
            start = time.perf_counter()
            batch = next(batches)
            wait_seconds.append(time.perf_counter() - start)
            run(batch)
            fed_seconds.append(time.perf_counter() - start)
            fed_sizes.append(len(batch))
    return {
        "config": config,
        "dataset": dataset,
        "amp": amp,
        "loader": images_per_second(loader_sizes, loader_seconds),
        "loader_ms": statistics.median(loader_seconds) * 1000,
        "ready": images_per_second([len(ready)] * len(ready_seconds), ready_seconds),
        "ready_ms": statistics.median(ready_seconds) * 1000,
        "fed": images_per_second(fed_sizes, fed_seconds),
        "fed_ms": statistics.median(fed_seconds) * 1000,
        "wait_share": sum(wait_seconds) / sum(fed_seconds),
        "wait_ms": statistics.median(wait_seconds) * 1000,
        "prefetched": prefetched,
    }


def loader_report_body(arguments: argparse.Namespace, result: dict) -> list[str]:
    config, data = result["config"], result["config"].data
    augment = data.augment
    transforms = ", ".join(f"{spec.name} p={spec.p:g}" for spec in augment.training_specs())
    ratio_loader = result["loader"] / result["ready"]
    met = "met" if ratio_loader >= LOADER_TARGET else "**not met**"
    fed_share = result["fed"] / result["ready"]
    options = f" (options: {', '.join(config.model.options)})" if config.model.options else ""
    return [
        f"- Data: `{arguments.cfg}` train split, {result['dataset']!r}; overrides {arguments.set or 'none'}",
        f"- Loader: `build_train_loader` as the trainer builds it: batch {data.batch_size}, {data.workers} workers "
        f"(persistent; pin_memory {'on' if torch.cuda.is_available() else 'off, no CUDA'}), input {data.image_size} "
        f"(multi-scale {'on' if data.multiscale.enabled else 'off'}), mosaic p={augment.mosaic.probability:g} "
        f"(MixUp p={augment.mosaic.mixup_probability:g}), then {transforms}, letterbox; "
        f"{result['prefetched'] + 1} untimed + {arguments.batches} timed batches with the main process only waiting",
        f"- Step: the config's: `{config.model.name}`{options}, {len(result['dataset'].class_names)} classes "
        f"(initial weights not loaded: they do not change the time), amp {config.train.amp} -> "
        f"{result['amp'].mode}, channels_last {config.train.channels_last}, {config.optimizer.name}, EMA "
        f"{config.train.ema}, grad clip {config.train.grad_clip_norm}; {arguments.steps} timed steps on one "
        f"pre-loaded batch and {arguments.steps} fed by the loader, in {arguments.rounds} alternating blocks (each "
        f"fed block after {result['prefetched']} untimed fed steps, which drain the batches queued meanwhile)",
        "",
        "| what | images/s | median ms per batch |",
        "|---|---:|---:|",
        f"| training loader alone ({data.workers} workers) | {result['loader']:.1f} | {result['loader_ms']:.0f} |",
        f"| training step on a pre-loaded batch | {result['ready']:.1f} | {result['ready_ms']:.0f} |",
        f"| training steps fed by the loader (wall clock) | {result['fed']:.1f} | {result['fed_ms']:.0f} |",
        "",
        f"The loader alone delivers {result['loader']:.1f} images/s, {ratio_loader:.1f}x the {result['ready']:.1f} "
        f"images/s the step consumes (issue 12 target >= {LOADER_TARGET}x: {met}). Fed by it, with its workers "
        f"sharing the {os.cpu_count()} cores with the step, training runs at {result['fed']:.1f} images/s, "
        f"{fed_share:.0%} of the pre-loaded rate; waiting for batches took {result['wait_share']:.1%} of the fed "
        f"steps' time (median {result['wait_ms']:.1f} ms per step); any other difference is the CPU time the "
        "workers take from the step, or noise.",
    ]


# --- report -----------------------------------------------------------------------------------------------


def background_text(background: Sequence[float | None]) -> str:
    known = [value for value in background if value is not None]
    if not known:
        return "unknown"
    text = ", ".join(f"{value:.2f}" for value in known) + " cores"
    if max(known) > BUSY_BACKGROUND_CORES:
        return text + ". **Other processes used the CPU during the timings; treat the figures as indicative.**"
    return text + " (an idle machine)"


def header(arguments: argparse.Namespace, command: str, started: datetime.datetime, loads) -> list[str]:
    (start_1, start_5, _), (end_1, end_5, _) = loads
    _, bf16_reason = native_bf16("cpu")
    return [
        f"- Machine: {cpu_name()}, {os.cpu_count()} logical cores ({bf16_reason}; torch CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}); Python {platform.python_version()}, torch {torch.__version__} "
        f"({arguments.threads} threads)",
        f"- Command: `{command}`",
        f"- Date: {started:%Y-%m-%d %H:%M} UTC; load average (1, 5 min) before {start_1:.2f}, {start_5:.2f} / after "
        f"{end_1:.2f}, {end_5:.2f}",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    start = start_bench("train_precision", argv)
    arguments = parse_arguments(start.argv)
    forward_cpu = load_bench_module("forward_cpu")
    forward_cpu.set_threads(arguments.threads)
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="train_precision_inductor_") as cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(arguments.compile_cache or cache)
        title, body = measure(arguments)
    report = "\n".join(header(arguments, start.command, start.started, (load_start, os.getloadavg())) + body)
    print(f"{title}\n\n{report}")
    if arguments.record:
        record_section(arguments.docs, title, report, NOTES_MARKER)
        logger.info("recorded in %s", arguments.docs)
    return 0


def cache_text(arguments: argparse.Namespace) -> str:
    if arguments.compile_cache is None:
        return "inductor's cache in a fresh temporary folder (the compile time is a cold start's)"
    return f"inductor's cache in `{arguments.compile_cache}` (a warm cache shortens the compile)"


def measure(arguments: argparse.Namespace) -> tuple[str, list[str]]:
    """The mode's section title and report lines (below the machine, start.command and date)."""
    if arguments.loader:
        title = LOADER_SECTION
        body = loader_report_body(arguments, loader_measurements(arguments))
    elif arguments.inference:
        title = INFERENCE_SECTION
        results, background = [], []
        for name in arguments.models:
            rows, differences, cores = inference_rows(arguments, name)
            results.append((name, rows, differences))
            background.append(cores)
        body = [
            f"- Background CPU use by other processes during the timed runs: {background_text(background)}",
            f"- Input {arguments.size}x{arguments.size}, batch {arguments.batch}, random weights and pixels (seed 0), "
            f"eval mode under torch.no_grad; {arguments.warmup} warm-up calls per row (compiled rows at least 2; "
            f"the compile happens in the first), then {arguments.repeats} timed calls, interleaved in rotating order. "
            "torch.compile (inductor, default mode) wraps the prepared network inside the `InferenceModel`; "
            "freezing: `torch.compile(..., options={'freezing': True})` (weights folded in as constants); "
            f"{cache_text(arguments)}.",
            "",
            inference_table(results),
            "",
            *(
                f"**{name}**: " + compile_summary(rows[index], rows[0], "call")
                for name, rows, _ in results
                for index in range(1, len(rows))
            ),
        ]
    else:
        title = TRAINING_SECTION
        sections = []
        with tempfile.TemporaryDirectory(prefix="train_precision_") as temporary:
            for name in arguments.models:
                rows, cores = training_rows(arguments, name, Path(temporary))
                sections += [
                    f"**{name}**, {arguments.size}x{arguments.size}, batch {arguments.batch}; background CPU use by "
                    f"other processes during the timed steps: {background_text([cores])}",
                    "",
                    training_table(rows, arguments.batch),
                    "",
                    training_verdict(rows, arguments.job_steps),
                    "",
                ]
        body = [
            f"- Random images and 8 random boxes per image (80 classes), seed 0; SGD (lr 1e-4, momentum 0.9, "
            f"weight decay 5e-4); {arguments.warmup} warm-up steps per row (the compiled row at least 2: the first "
            f"compiles forward and backward), then {arguments.repeats} timed steps, interleaved in rotating order. "
            "Ours: `StepRunner.micro_step` (forward under autocast, YoloLoss in fp32, backward, optimizer step); "
            "channels_last: model and batch in NHWC, as `train.channels_last` does; torch.compile: inductor, default "
            f"mode, on the model (not the loss); {cache_text(arguments)}.",
            "",
            *sections,
        ]
    return title, body


if __name__ == "__main__":
    sys.exit(main())
