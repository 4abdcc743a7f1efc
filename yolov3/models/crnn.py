"""``[crnn]``: Darknet's convolutional RNN, with the inference forward of AlexeyAB's Darknet on the CPU.

Darknet builds three convolutions with the section's size, stride, padding, groups, batch norm and activation:
``input`` (in -> hidden), ``self`` (hidden -> hidden) and ``output`` (hidden -> output). Each step of
``forward_crnn_layer``::

    state = (state if shortcut else 0) + input(x) + self(state)
    y = output(state)

Here a forward is one step from a zero state (what ``darknet detector test`` computes for one image with
``time_steps=1``: the state is allocated zeroed): ``y = output(input(x) + self(0))``; ``self(0)`` is the
activation of its bias (or batch-norm shift). ``fuse_conv_batchnorm`` does not reach these convs, so their
batch norm is Darknet's unfused one: ``(x - mean) / sqrt(var + 1e-5)``. The ``.weights`` hold the three convs in
that order, each laid out as a [convolutional]. Not trained here (no state is carried across batches), and no
state is kept between calls: a video's frames are independent.
"""

from __future__ import annotations

import torch
from torch import nn

from yolov3.darknet.cfg import ConvLstmSection, CrnnSection
from yolov3.models.layers import ConvBNAct

# batchnorm_layer.c's normalize_cpu divides by sqrt(variance + .00001f)
DARKNET_BATCHNORM_EPS = 1e-5


def recurrent_convolution(section: CrnnSection | ConvLstmSection, inputs: int, outputs: int) -> ConvBNAct:
    """One of a recurrent layer's convs: the section's size, stride, padding, groups, batch norm and activation,
    ``inputs -> outputs`` channels, with Darknet's unfused batch-norm epsilon."""
    block = ConvBNAct.from_keys(section, inputs, outputs)
    if block.bn is not None:
        block.bn.eps = DARKNET_BATCHNORM_EPS
    return block


class Crnn(nn.Module):
    """[crnn] for one step from a zero state: ``output_conv(input_conv(x) + self_conv(0))``."""

    def __init__(self, section: CrnnSection, in_channels: int) -> None:
        super().__init__()
        self.input_conv = recurrent_convolution(section, in_channels, section.hidden)
        self.self_conv = recurrent_convolution(section, section.hidden, section.hidden)
        self.output_conv = recurrent_convolution(section, section.hidden, section.output)

    @property
    def blocks(self) -> tuple[ConvBNAct, ConvBNAct, ConvBNAct]:
        """The three convs in ``.weights`` order."""
        return self.input_conv, self.self_conv, self.output_conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.input_conv(x)
        zero_state = hidden.new_zeros(hidden.shape)  # (B, hidden, H, W): Darknet's state starts zeroed
        return self.output_conv(hidden + self.self_conv(zero_state))
