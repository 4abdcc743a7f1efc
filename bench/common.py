"""Helpers every ``bench/`` script shares: the machine's CPU name, the command line of the report, interleaved
timing and the CPU time other processes used meanwhile.

The scripts run as ``python bench/<script>.py``, so this module (like :mod:`docs_section`) is imported as a
top-level module from the script's own folder; the tests reach it through pytest's ``pythonpath = bench``.
"""

from __future__ import annotations

import datetime
import gc
import importlib.util
import logging
import os
import platform
import shlex
import sys
import time
import types
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from yolov3.data.collate import Batch
from yolov3.models.layers import ConvBNAct


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo, else what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def load_bench_module(name: str) -> types.ModuleType:
    """``bench/<name>.py`` as a module, for a script that uses another script's helpers (e.g. forward_cpu's)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class BenchStart:
    """A benchmark's command-line arguments, the command as the report quotes it, and when it started."""

    argv: list[str]
    command: str
    started: datetime.datetime


def start_bench(script: str, argv: Sequence[str] | None) -> BenchStart:
    """What every script's ``main`` does first: read ``argv`` (default: the process's), log with times to
    stderr, and note the command line and the start time for the report."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    return BenchStart(
        arguments, command_line(f"bench/{script}.py", arguments), datetime.datetime.now(datetime.timezone.utc)
    )


def command_line(script: str, argv: Sequence[str]) -> str:
    """The command a report names, e.g. ``python bench/loader.py --record``."""
    return shlex.join(["python", script, *argv])


def time_interleaved(
    runners: dict[str, Callable[[], object]], warmup: int, repeats: int, logger: logging.Logger | None = None
) -> dict[str, list[float]]:
    """Seconds per call of each runner; each repetition runs every runner once, in a rotating order.

    The first ``warmup`` repetitions are not kept; with ``logger``, each repetition's end is logged.
    """
    names = list(runners)
    samples: dict[str, list[float]] = {name: [] for name in names}
    gc.collect()
    for repetition in range(warmup + repeats):
        shift = repetition % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            runners[name]()
            elapsed = time.perf_counter() - start
            if repetition >= warmup:
                samples[name].append(elapsed)
        if logger is not None:
            logger.info("repetition %d/%d done", repetition + 1, warmup + repeats)
    return samples


def busy_cpu_seconds() -> float | None:
    """All CPUs' non-idle time since boot (user, nice, system, irq, softirq, steal), from /proc/stat."""
    try:
        fields = [int(value) for value in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    except (OSError, ValueError, IndexError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU time of this process and its finished children."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


# Above this many cores of other processes' CPU use during a timing, a report calls its figures indicative.
BUSY_BACKGROUND_CORES = 0.2


def background_sentence(measured: Sequence[tuple[str, float | None]]) -> str:
    """The report's line on other processes' CPU use, one ``(what was timed, cores or None)`` pair each, ending
    in a warning when any exceeded :data:`BUSY_BACKGROUND_CORES`."""
    text = ", ".join(f"{name} " + ("unknown" if cores is None else f"{cores:.2f}") for name, cores in measured)
    known = [cores for _, cores in measured if cores is not None]
    if known and max(known) > BUSY_BACKGROUND_CORES:
        return text + " cores. **Other processes used the CPU during the timings; treat the figures as indicative.**"
    return text + " cores (an idle machine)."


class CpuMeter:
    """CPU time used by other processes while it runs, in cores: (all busy CPU time - ours) / wall time.

    The load average cannot tell the benchmark's own threads from background work; /proc/stat and
    ``os.times()`` can. Where /proc/stat is missing, ``background_cores`` is None.
    """

    def __enter__(self) -> CpuMeter:
        self.background_cores: float | None = None
        self._start = (time.perf_counter(), busy_cpu_seconds(), own_cpu_seconds())
        return self

    def __exit__(self, *exception: object) -> None:
        wall_start, busy_start, own_start = self._start
        busy_end = busy_cpu_seconds()
        wall = time.perf_counter() - wall_start
        if busy_start is not None and busy_end is not None and wall > 0:
            others = (busy_end - busy_start) - (own_cpu_seconds() - own_start)
            self.background_cores = max(0.0, others / wall)


def random_targets(batch: int, per_image: int, classes: int, generator: torch.Generator) -> torch.Tensor:
    """(N, 6) rows of (image, class, cx, cy, w, h), boxes 5%..50% of the image."""
    count = batch * per_image
    image = torch.arange(batch).repeat_interleave(per_image).float()
    label = torch.randint(0, classes, (count,), generator=generator).float()
    size = torch.rand(count, 2, generator=generator) * 0.45 + 0.05
    centre = size / 2 + torch.rand(count, 2, generator=generator) * (1 - size)
    return torch.cat([image[:, None], label[:, None], centre, size], dim=1)


def initialize_convolutions(model: nn.Module, seed: int, distribution: Literal["normal", "laplace"] = "normal") -> None:
    """Random conv weights of variance 2 / fan-in (Kaiming; ``"laplace"`` for the heavy tails trained weights
    have, which is what magnitude pruning and weight sharing see) and BatchNorms near identity: activations
    stay O(1), with no denormals to slow a timing down."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if not isinstance(module, ConvBNAct):
                continue
            conv, bn = module.conv, module.bn
            fan_in = conv.in_channels // conv.groups * conv.kernel_size[0] * conv.kernel_size[1]
            if distribution == "laplace":
                uniform = torch.rand(conv.weight.shape, generator=generator) - 0.5  # Laplace by inverse CDF
                unit = -torch.sign(uniform) * torch.log1p(-2 * uniform.abs()) * 0.5**0.5  # variance 1
            else:
                unit = torch.randn(conv.weight.shape, generator=generator)
            conv.weight.copy_(unit * (2.0 / fan_in) ** 0.5)
            if conv.bias is not None:
                conv.bias.copy_(torch.randn(conv.out_channels, generator=generator) * 0.01)
            if bn is not None:
                channels = bn.num_features
                bn.weight.copy_(torch.rand(channels, generator=generator) * 0.4 + 0.8)
                bn.bias.copy_(torch.randn(channels, generator=generator) * 0.05)
                bn.running_mean.copy_(torch.randn(channels, generator=generator) * 0.05)
                bn.running_var.copy_(torch.rand(channels, generator=generator) * 0.4 + 0.8)


def endless(loader: torch.utils.data.DataLoader) -> Iterator[Batch]:
    """The loader's batches epoch after epoch (``set_epoch`` before each, as the trainer does)."""
    epoch = 0
    while True:
        loader.batch_sampler.set_epoch(epoch)
        yield from loader
        epoch += 1
