"""``[deconvolutional]`` / ``[deconv]``: pjreddie's transposed convolution (AlexeyAB's parser does not read it)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from yolov3.darknet.cfg import DeconvolutionalSection
from yolov3.models.layers import make_activation

# pjreddie's normalize_cpu: (x - mean) / (sqrt(variance) + .000001f), the epsilon outside the square root
PJREDDIE_NORMALIZE_EPS = 1e-6


class Deconvolution(nn.Module):
    """``forward_deconvolutional_layer`` (pjreddie): ``conv_transpose2d`` with the section's stride and padding
    (col2im crops ``padding`` from each side: output ``(H - 1) * stride + size - 2 * padding``), then with
    ``batch_normalize`` ``scales * (x - mean) / (sqrt(variance) + 1e-6) + biases`` over the running statistics
    (pjreddie's ``forward_batchnorm_layer`` outside training; nothing fuses it), else ``+ biases``; then the
    activation. The running statistics are used in train mode too: the layer is not trained here.

    ``.weights`` (``load_convolutional_weights``): biases, then with batch norm scales, rolling mean, rolling
    variance, then the weights (C_in, filters, size, size), which is ``conv_transpose2d``'s layout.
    """

    rolling_mean: torch.Tensor
    rolling_variance: torch.Tensor

    def __init__(self, section: DeconvolutionalSection, in_channels: int) -> None:
        super().__init__()
        filters, size = section.filters, section.size
        self.stride, self.padding = section.stride, section.effective_padding
        self.weight = nn.Parameter(torch.randn(in_channels, filters, size, size) * (in_channels * size * size) ** -0.5)
        self.bias = nn.Parameter(torch.zeros(filters))
        self.batch_normalize = bool(section.batch_normalize)
        if self.batch_normalize:
            self.scales = nn.Parameter(torch.ones(filters))
            self.register_buffer("rolling_mean", torch.zeros(filters))
            self.register_buffer("rolling_variance", torch.ones(filters))
        self.act = make_activation(section.activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.conv_transpose2d(x, self.weight, stride=self.stride, padding=self.padding)  # (B, filters, H', W')
        if self.batch_normalize:
            deviation = self.rolling_variance.sqrt() + PJREDDIE_NORMALIZE_EPS
            out = (out - self.rolling_mean[:, None, None]) / deviation[:, None, None] * self.scales[:, None, None]
        return self.act(out + self.bias[:, None, None])

    def darknet_tensors(self) -> list[torch.Tensor]:
        if not self.batch_normalize:
            return [self.bias, self.weight]
        return [self.bias, self.scales, self.rolling_mean, self.rolling_variance, self.weight]
