"""``[local]``: Darknet's locally connected layer (a convolution with unshared weights)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from yolov3.darknet.cfg import LocalSection
from yolov3.darknet.classic_shapes import local_output_extent
from yolov3.models.layers import make_activation


class LocallyConnected(nn.Module):
    """``forward_local_layer``: at every output location l, ``W_l @ column_l + bias`` where ``column_l`` is the
    im2col column (channel, kernel row, kernel column) of that location, padded by ``pad`` pixels; then the
    activation (Darknet's ``activate_array``).

    Parameters in ``.weights`` order (``load_weights_upto``): ``bias`` (filters, out_h, out_w), one per output
    value, then ``weight`` (out_h * out_w, filters, C * size * size), location-major.
    """

    def __init__(self, section: LocalSection, input_shape: tuple[int, int, int]) -> None:
        super().__init__()
        channels, rows, columns = input_shape
        self.size, self.stride, self.padding = section.size, section.stride, section.pad
        self.output_size = (local_output_extent(rows, section), local_output_extent(columns, section))
        locations = self.output_size[0] * self.output_size[1]
        fan_in = channels * section.size**2
        self.weight = nn.Parameter(torch.randn(locations, section.filters, fan_in) * fan_in**-0.5)
        self.bias = nn.Parameter(torch.zeros(section.filters, *self.output_size))
        self.act = make_activation(section.activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, C, H, W) -> (B, C*size*size, L): im2col's layout, L = out_h * out_w locations
        columns = F.unfold(x, self.size, padding=self.padding, stride=self.stride)
        out = torch.einsum("lfk,bkl->bfl", self.weight, columns)  # (B, filters, L)
        out = out.reshape(x.shape[0], -1, *self.output_size)  # (B, filters, L) -> (B, filters, out_h, out_w)
        return self.act(out + self.bias)

    def darknet_tensors(self) -> list[torch.Tensor]:
        return [self.bias, self.weight]
