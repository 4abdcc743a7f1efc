"""``[batchnorm]``: Darknet's standalone batch norm layer."""

from __future__ import annotations

import torch
from torch import nn

from yolov3.models.connected import DARKNET_NORMALIZE_EPS


class DarknetBatchNorm(nn.BatchNorm2d):
    """``[batchnorm]``: ``scales * (x - mean) / sqrt(variance + 1e-5) + biases`` per channel (running statistics
    at inference). ``.weights`` (``load_batchnorm_weights``): biases, scales, rolling mean, rolling variance."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, eps=DARKNET_NORMALIZE_EPS)

    def darknet_tensors(self) -> list[torch.Tensor]:
        mean, variance = self.running_mean, self.running_var
        assert mean is not None and variance is not None  # track_running_stats is on
        return [self.bias, self.weight, mean, variance]
