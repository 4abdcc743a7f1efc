"""``[connected]``: Darknet's fully connected layer, on the flattened (C*H*W) input."""

from __future__ import annotations

import torch
from torch import nn

from yolov3.darknet.cfg import ConnectedSection
from yolov3.models.layers import make_activation

# normalize_cpu divides by sqrt(variance + .00001f); fuse_conv_batchnorm never reaches a [connected] layer
DARKNET_NORMALIZE_EPS = 1e-5


class Connected(nn.Module):
    """``forward_connected_layer``: ``W x``, then (``batch_normalize``) ``scales * (. - mean) / sqrt(var + 1e-5)``,
    then ``+ biases``, then the activation; output (B, output, 1, 1).

    ``.weights`` (``load_connected_weights``): biases, weights (output x inputs, row-major), then with batch norm
    scales, rolling mean, rolling variance. With batch norm the biases are the BatchNorm1d's bias.
    """

    def __init__(self, inputs: int, section: ConnectedSection) -> None:
        super().__init__()
        batch_norm = bool(section.batch_normalize)
        self.linear = nn.Linear(inputs, section.output, bias=not batch_norm)
        self.bn = nn.BatchNorm1d(section.output, eps=DARKNET_NORMALIZE_EPS) if batch_norm else None
        self.act = make_activation(section.activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.linear(x.flatten(1))  # (B, C, H, W) -> (B, C*H*W) -> (B, output)
        if self.bn is not None:
            out = self.bn(out)
        return self.act(out)[:, :, None, None]  # (B, output, 1, 1)

    def darknet_tensors(self) -> list[torch.Tensor]:
        if self.bn is None:
            assert self.linear.bias is not None  # created with a bias when there is no batch norm
            return [self.linear.bias, self.linear.weight]
        mean, variance = self.bn.running_mean, self.bn.running_var
        assert mean is not None and variance is not None  # track_running_stats is on
        return [self.bn.bias, self.linear.weight, self.bn.weight, mean, variance]
