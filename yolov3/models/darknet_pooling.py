"""AlexeyAB's [maxpool] beyond square strides: ``stride_x`` / ``stride_y``, ``maxpool_depth`` and ``antialiasing``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from yolov3.darknet.cfg import MaxpoolSection
from yolov3.models.antialiasing import Blur
from yolov3.models.layers import DarknetMaxPool


class StridedMaxPool(nn.Module):
    """Darknet's max pooling (``padding`` cells of -inf, ``padding // 2`` first) with (rows, columns) strides."""

    def __init__(self, size: int, strides: tuple[int, int], padding: int) -> None:
        super().__init__()
        self.size, self.strides, self.padding = size, strides, padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        before, after = self.padding // 2, self.padding - self.padding // 2
        if self.padding:
            x = F.pad(x, (before, after, before, after), value=float("-inf"))
        return F.max_pool2d(x, self.size, self.strides)


class DepthMaxPool(nn.Module):
    """``maxpool_depth=1``: output channel ``g`` is the maximum of input channels ``g, g + out_channels, ...``
    at each position (Darknet's ``forward_maxpool_layer``; size, stride and padding are unused)."""

    def __init__(self, out_channels: int) -> None:
        super().__init__()
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        rounds = -(-channels // self.out_channels)
        missing = rounds * self.out_channels - channels
        if missing:  # channels past the input never win
            x = torch.cat([x, x.new_full((batch, missing, height, width), float("-inf"))], dim=1)
        # (B, rounds * out, H, W) -> (B, rounds, out, H, W) -> max over rounds
        return x.view(batch, rounds, self.out_channels, height, width).amax(dim=1)


def maxpool_from_section(section: MaxpoolSection) -> nn.Module:
    """The module for a [maxpool] section: Darknet's square pool where it is one, else the modules above."""
    assert section.size is not None and section.padding is not None  # defaulted in __post_init__
    if section.maxpool_depth:
        return DepthMaxPool(section.out_channels)
    if section.antialiasing:
        return nn.Sequential(
            StridedMaxPool(section.size, (1, 1), section.padding), Blur(section.antialiasing, section.strides)
        )
    stride_y, stride_x = section.strides
    if stride_y == stride_x:
        return DarknetMaxPool(section.size, stride_y, section.padding)
    return StridedMaxPool(section.size, section.strides, section.padding)
