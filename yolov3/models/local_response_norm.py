"""``[lrn]`` / ``[normalization]``: Darknet's local response normalization across channels."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from yolov3.darknet.cfg import LrnSection


class LocalResponseNorm(nn.Module):
    """``forward_normalization_layer``: ``x / norm ^ beta`` with, per channel k,
    ``norm_k = kappa + alpha * sum(x_j^2 for j in k - (size-1)/2 .. k + size/2)``, alpha not divided by size
    (``torch.nn.LocalResponseNorm`` divides it).

    Darknet builds the sums as a running window: it starts channel 0 from the channels ``0 .. size/2 - 1`` and
    then adds channel ``k + size/2`` and drops channel ``k - (size-1)/2 - 1`` for each next k. Channel
    ``size/2`` is therefore never added, yet dropped once the window has passed it: every norm is the window
    sum minus ``x_{size/2}^2`` (when that channel exists). That is what is computed here. No ``.weights``.
    """

    def __init__(self, section: LrnSection) -> None:
        super().__init__()
        self.size, self.alpha, self.beta, self.kappa = section.size, section.alpha, section.beta, section.kappa

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        squared = x * x  # (B, C, H, W)
        before, after = (self.size - 1) // 2, self.size // 2
        padded = F.pad(squared, (0, 0, 0, 0, before, after))  # (B, C + size - 1, H, W)
        window = padded.unfold(1, self.size, 1).sum(-1)  # (B, C, H, W, size) -> (B, C, H, W)
        if after < x.shape[1]:  # Darknet's running sum never adds channel size/2 but drops it
            window = window - squared[:, after : after + 1]
        norms = self.kappa + self.alpha * window
        return x * norms.pow(-self.beta)
