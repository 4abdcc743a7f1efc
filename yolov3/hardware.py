"""What the hardware does fast: native bfloat16 on this CPU or GPU, and the precision ``auto`` picks.

Training (``train.amp: auto``) and inference (``--precision``) ask the same two questions, answered here
from what PyTorch reports and, on Linux, the CPU flags in ``/proc/cpuinfo``:

- ``native_bf16(device)``: whether bf16 matrix work runs natively (a CPU with AVX512-BF16 or AMX, which
  oneDNN uses for bf16 convolutions; a GPU that ``torch.cuda.is_bf16_supported()``), with the reason.
- ``auto_amp(device)``: the autocast mode ``auto`` resolves to, with the reason: bf16 on such CPUs, fp16 with
  a gradient scaler on CUDA (bf16 where the GPU has it), fp32 elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

CPU_FLAGS_FILE = Path("/proc/cpuinfo")
BF16_CPU_FLAGS = {"amx_bf16": "AMX-BF16", "avx512_bf16": "AVX512-BF16"}


@dataclass(frozen=True)
class AmpChoice:
    """The autocast mode ``auto`` picked (``"none"``, ``"fp16"`` or ``"bf16"``) and why."""

    mode: str
    reason: str


def cpu_flags(path: Path = CPU_FLAGS_FILE) -> frozenset[str]:
    """The CPU feature flags the kernel reports (empty where ``/proc/cpuinfo`` is absent or unreadable)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags") and ":" in line:
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def native_bf16(device: torch.device | str, flags: frozenset[str] | None = None) -> tuple[bool, str]:
    """Whether ``device`` computes bfloat16 natively, and a human reason (e.g. ``"CPU has AVX512-BF16"``)."""
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return False, "CUDA is not available"
        name = torch.cuda.get_device_name(device)
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return True, f"GPU {name} has native bf16"
        return False, f"GPU {name} has no native bf16"
    if device.type != "cpu":
        return False, f"no bf16 rule for device type {device.type!r}"
    flags = cpu_flags() if flags is None else flags
    found = [label for flag, label in BF16_CPU_FLAGS.items() if flag in flags]
    if not found:
        return False, "CPU has neither AVX512-BF16 nor AMX-BF16"
    if not torch.backends.mkldnn.is_available():
        return False, f"CPU has {' and '.join(found)} but this PyTorch has no oneDNN"
    return True, f"CPU has {' and '.join(found)}"


def auto_amp(device: torch.device | str, flags: frozenset[str] | None = None) -> AmpChoice:
    """The mixed-precision mode for training on ``device``: bf16 where native, else fp16 on CUDA, else none."""
    device = torch.device(device)
    has_bf16, reason = native_bf16(device, flags)
    if has_bf16:
        return AmpChoice("bf16", f"{reason}: bf16 autocast")
    if device.type == "cuda" and torch.cuda.is_available():
        return AmpChoice("fp16", f"{reason}: fp16 autocast with a gradient scaler")
    return AmpChoice("none", f"{reason}: fp32")


def resolve_amp(mode: str, device: torch.device | str) -> AmpChoice:
    """``train.amp`` as configured (``auto``, ``none``, ``fp16``, ``bf16``) resolved for ``device``."""
    if mode == "auto":
        return auto_amp(device)
    if mode not in ("none", "fp16", "bf16"):
        raise ValueError(f"amp must be one of auto, none, fp16, bf16; got {mode!r}")
    return AmpChoice(mode, "set in the config")
