"""``train.channels_last``: which convolutions train in NHWC memory order.

oneDNN (CPU) and cuDNN (GPU) run convolutions faster on NHWC tensors, and a convolution's output is NHWC
whenever its input or its weight is, so converting the weights is enough: the batches follow from the first
NHWC convolution on. One layer kind loses, measured on this project's 2-core AVX512-BF16 CPU with torch
2.13: PyTorch's CPU ``batch_norm`` backward on an NHWC tensor of fewer than 16 channels (one AVX-512 vector
of fp32) takes 4x (4 channels at 192x192) to 7x (8 channels at 96x96) its NCHW time in bf16 and 9x in fp32;
at 16 channels and more the two orders are within 1.6x either way. A quarter-width yolov3-tiny (the main
job: 4 and 8 channels in its first layers) took 68-78 ms per bf16 step with every layer NHWC, and 50 ms,
as fast as all-NCHW, with those two left in NCHW.

:func:`to_channels_last` therefore converts the weights of the convolutions with at least
:data:`MIN_CHANNELS` output channels and leaves the narrower ones, and the input batch, in NCHW. Narrow
layers are, in practice, the stem: a narrow convolution fed by an NHWC tensor (after a wide one) computes
in NHWC whatever its weight's order.
"""

from __future__ import annotations

import torch
from torch import nn

MIN_CHANNELS = 16  # narrower convolutions (and their batch norms) stay NCHW: see the module docstring


def to_channels_last(model: nn.Module, min_channels: int = MIN_CHANNELS) -> list[str]:
    """Put the weights of ``model``'s ``Conv2d`` layers with ``>= min_channels`` outputs in ``channels_last``.

    Works in place (pruning reparametrizations included: ``weight_orig`` and ``weight_mask`` are converted
    together) and returns the names of the convolutions left in NCHW because they are narrower.
    """
    if min_channels < 1:
        raise ValueError(f"min_channels must be a positive channel count, got {min_channels}")
    kept_contiguous = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Conv2d):
            continue
        if module.out_channels < min_channels:
            kept_contiguous.append(name)
            continue
        module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs lack it
    return kept_contiguous
