"""``[history]``: Darknet's stack of the last ``history_size`` inputs, as its CPU forward runs with one time step.

``forward_history_layer`` with ``time_steps=1`` (how ``darknet detector test`` parses the network) copies the
input into the first C*H*W values of its C*history_size*H*W output and returns; the rest of the buffer was
allocated zeroed and stays zero. So the output is the input followed by ``(history_size - 1) * C`` zero
channels. No ``.weights``; no history is kept between calls (Darknet keeps one only with ``time_steps > 1``).
"""

from __future__ import annotations

import torch
from torch import nn

from yolov3.darknet.cfg import HistorySection


class History(nn.Module):
    """The input, then ``(history_size - 1) * C`` zero channels: (B, C, H, W) -> (B, C * history_size, H, W)."""

    def __init__(self, section: HistorySection) -> None:
        super().__init__()
        self.history_size = section.history_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        older = x.new_zeros((batch, channels * (self.history_size - 1), height, width))
        return torch.cat((x, older), dim=1)  # (B, C, H, W) -> (B, C * history_size, H, W)
