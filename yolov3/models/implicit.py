"""``[implicit]`` (YOLOR's implicit knowledge): a learned constant tensor, whatever the input."""

from __future__ import annotations

import torch
from torch import nn

from yolov3.darknet.cfg import ImplicitSection


class Implicit(nn.Module):
    """A (filters, atoms, 1) parameter repeated over the batch (Darknet's ``forward_implicit_layer``: the output
    is the weights). ``.weights``: its ``filters * atoms`` values in that order. Initialized to ``mean``
    (Darknet adds uniform noise of ``std``; a loaded file overwrites it either way)."""

    def __init__(self, section: ImplicitSection) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((section.filters, section.atoms, 1), section.mean))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight.unsqueeze(0).expand(x.shape[0], -1, -1, -1).clone()  # (B, filters, atoms, 1)

    def darknet_tensors(self) -> list[torch.Tensor]:
        return [self.weight]
