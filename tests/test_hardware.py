"""What ``amp: auto`` and ``--precision`` ask of the hardware: native bf16, read from the CPU flags."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from yolov3.hardware import auto_amp, cpu_flags, native_bf16, resolve_amp


def test_cpu_flags_are_read_from_the_flags_line(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx512f avx512_bf16\n\n")
    assert cpu_flags(cpuinfo) == {"fpu", "sse2", "avx512f", "avx512_bf16"}
    assert cpu_flags(tmp_path / "missing") == frozenset()


@pytest.mark.parametrize(
    ("flags", "mode", "reason"),
    [
        ({"avx512f", "avx512_bf16"}, "bf16", "CPU has AVX512-BF16: bf16 autocast"),
        ({"amx_bf16", "avx512_bf16"}, "bf16", "CPU has AMX-BF16 and AVX512-BF16: bf16 autocast"),
        ({"avx2", "avx512f"}, "none", "CPU has neither AVX512-BF16 nor AMX-BF16: fp32"),
        (set(), "none", "CPU has neither AVX512-BF16 nor AMX-BF16: fp32"),
    ],
)
def test_auto_picks_bf16_only_on_cpus_that_compute_it_natively(flags: set[str], mode: str, reason: str) -> None:
    choice = auto_amp("cpu", frozenset(flags))
    assert (choice.mode, choice.reason) == (mode, reason)
    assert native_bf16(torch.device("cpu"), frozenset(flags))[0] == (mode == "bf16")


def test_an_explicit_amp_is_kept_and_a_wrong_one_is_refused() -> None:
    assert resolve_amp("fp16", "cpu").mode == "fp16"
    assert resolve_amp("none", "cpu").reason == "set in the config"
    assert resolve_amp("auto", "cpu") == auto_amp("cpu")
    with pytest.raises(ValueError, match=r"amp must be one of auto, none, fp16, bf16; got 'fp8'"):
        resolve_amp("fp8", "cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_auto_on_cuda_is_half_precision() -> None:
    assert auto_amp("cuda").mode in {"fp16", "bf16"}
