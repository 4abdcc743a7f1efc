"""Darknet's anti-aliasing (``antialiasing=1`` / ``2`` in [convolutional] and [maxpool]): a fixed blur after the layer.

AlexeyAB's ``make_convolutional_layer`` and ``make_maxpool_layer`` run the layer with stride 1 and give it an
``input_layer``: a depthwise [convolutional] (groups = channels, linear, bias 0) with the layer's strides and
fixed weights, which the forward applies to the output and copies back. ``antialiasing=1``: a 3x3 kernel, the
outer product of (1, 2, 1) / 4 with itself (1/16 .. 4/16), padding 1; ``antialiasing=2``: a 2x2 kernel of 1/4,
no padding. The blur is not in the ``.weights`` file (``load_weights_upto`` never reads ``input_layer``) and is
not fused or trained.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from yolov3.darknet.cfg import ConvolutionalSection
from yolov3.models.layers import ConvBNAct


class Blur(nn.Module):
    """Darknet's fixed depthwise blur with ``strides`` (rows, columns); works for any channel count."""

    kernel: torch.Tensor  # buffer, (1, 1, k, k)

    def __init__(self, antialiasing: int, strides: tuple[int, int]) -> None:
        super().__init__()
        if antialiasing == 2:
            kernel, self.padding = torch.full((2, 2), 0.25), 0
        else:
            row = torch.tensor([1.0, 2.0, 1.0])
            kernel, self.padding = torch.outer(row, row) / 16, 1
        self.register_buffer("kernel", kernel[None, None], persistent=False)
        self.antialiasing, self.strides = antialiasing, strides

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        weight = self.kernel.to(x.dtype).expand(channels, 1, -1, -1)  # (C, 1, k, k): one blur per channel
        return F.conv2d(x, weight, stride=self.strides, padding=self.padding, groups=channels)


class AntialiasedConv(ConvBNAct):
    """``[convolutional] antialiasing``: the conv (batch norm, activation) at stride 1, then :class:`Blur` with
    the section's strides. Its ``.weights`` and fusing are those of any :class:`ConvBNAct`."""

    blur: Blur

    @classmethod
    def from_antialiased_section(cls, section: ConvolutionalSection, in_channels: int) -> AntialiasedConv:
        block = cls.from_section(section, in_channels)
        assert isinstance(block, AntialiasedConv)  # from_section builds a cls
        block.conv.stride = (1, 1)
        block.blur = Blur(section.antialiasing, section.strides)
        return block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blur(super().forward(x))

    def to_section(self) -> ConvolutionalSection:
        stride_y, stride_x = self.blur.strides
        section = super().to_section()
        if stride_y == stride_x:
            return dataclasses.replace(section, stride=stride_y, antialiasing=self.blur.antialiasing)
        return dataclasses.replace(section, stride_x=stride_x, stride_y=stride_y, antialiasing=self.blur.antialiasing)
