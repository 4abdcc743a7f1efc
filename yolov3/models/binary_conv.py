"""Binary (XNOR) convolutions, ``[convolutional] xnor=1``, with the forward of AlexeyAB's Darknet on the CPU.

``darknet detector test`` (and ``tests/darknet_forward.c``) folds batch norm into each conv
(``fuse_conv_batchnorm``: ``w' = w * gamma / sqrt(var + 1e-5)``, ``b' = beta - gamma * mean / sqrt(var + 1e-5)``),
then ``calculate_binary_weights`` packs the signs of ``w'`` into bits with one scale per filter,
``mean |w'|``, and the forward runs ``gemm_nn_custom_bin_mean_transposed``::

    output[f, y, x] = mean|w'_f| * sum_{c,i,j} s(padded_input[c, y*stride + i, x*stride + j]) * s(w'[f,c,i,j]) + b'_f

with ``s(v) = +1 if v > 0 else -1``. The zero padding is binarized like any other input (a 0 bit): a padded cell
counts as -1, not 0. The activation follows, except that ``bin_output=1`` makes it linear (where Darknet keeps
the flag: :func:`binary_output_layers`). ``groups`` is ignored (Darknet sets it to 1). The ``.weights`` layout is
that of any conv (float weights, biases, batch-norm statistics), so the block is a :class:`ConvBNAct`: it loads,
saves and fuses like one (its BatchNorm has Darknet's fusing epsilon, 1e-5, so the fused copy is the same network).

This is an inference forward in train and eval mode alike (running statistics, no straight-through gradient):
binary layers are not trained here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from yolov3.darknet.cfg import (
    ConvolutionalSection,
    RouteSection,
    SamSection,
    ScaleChannelsSection,
    ShortcutSection,
)
from yolov3.darknet.graph import LayerNode
from yolov3.models.layers import ConvBNAct

# fuse_conv_batchnorm divides by sqrt(rolling_variance + .00001)
DARKNET_FUSE_EPS = 1e-5


def binary_output_layers(nodes: list[LayerNode]) -> frozenset[int]:
    """Indices of the ``xnor=1 bin_output=1`` convolutions whose activation Darknet makes linear.

    ``parse_network_cfg_custom`` clears ``use_bin_output`` on every layer a [route] reads, and on the layer
    before, and the (first) ``from`` layer of, a [shortcut], [sam] or [scale_channels].
    """
    cleared: set[int] = set()
    for node in nodes:
        section = node.section
        if isinstance(section, (ShortcutSection, SamSection, ScaleChannelsSection)):
            cleared.update(node.sources[:2])  # the previous layer, then the first `from`
        elif isinstance(section, RouteSection):
            cleared.update(node.sources)
    return frozenset(
        node.index
        for node in nodes
        if isinstance(node.section, ConvolutionalSection)
        and node.section.xnor
        and node.section.bin_output
        and node.index not in cleared
    )


def binarize(values: torch.Tensor) -> torch.Tensor:
    """Darknet's bits as numbers: +1 where ``values > 0``, else -1 (zero included)."""
    return torch.where(values > 0, 1.0, -1.0).to(values.dtype)


class XnorConv(ConvBNAct):
    """``[convolutional] xnor=1``: signs of the input times signs of the (batch-norm folded) weights, scaled by
    ``mean |w'|`` per filter, plus the folded bias, then the activation (linear with ``linear_output``)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        *,
        padding: int | None = None,
        batch_norm: bool = True,
        activation: str = "leaky",
        bin_output: bool = False,
        linear_output: bool = False,
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding=padding,
            batch_norm=batch_norm,
            activation=activation,
        )
        if self.bn is not None:
            self.bn.eps = DARKNET_FUSE_EPS
        self.bin_output = bin_output
        self.linear_output = linear_output
        if linear_output:
            self.act = nn.Identity()

    @classmethod
    def from_section(cls, section: ConvolutionalSection, in_channels: int, linear_output: bool = False) -> XnorConv:
        return cls(
            in_channels,
            section.filters,
            section.size,
            section.strides[0],
            padding=section.effective_padding,
            batch_norm=bool(section.batch_normalize),
            activation=section.activation,
            bin_output=bool(section.bin_output),
            linear_output=linear_output,
        )

    def to_section(self) -> ConvolutionalSection:
        section = super().to_section()
        section.xnor, section.bin_output = 1, int(self.bin_output)
        return section

    def folded_parameters(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The weights and bias after Darknet's ``fuse_conv_batchnorm`` (computed in float64, as it does)."""
        weight = self.conv.weight.double()
        if self.bn is None:
            bias = self.conv.bias if self.conv.bias is not None else torch.zeros_like(self.conv.weight[:, 0, 0, 0])
            return weight.float(), bias
        bn = self.bn
        assert bn.running_var is not None and bn.running_mean is not None  # ConvBNAct's BN tracks statistics
        scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
        bias = bn.bias.double() - scale * bn.running_mean.double()
        return (weight * scale.view(-1, 1, 1, 1)).float(), bias.float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.folded_parameters()
        scale = weight.abs().flatten(1).mean(1)  # (F, C, k, k) -> (F,): mean |w'| per filter
        assert not isinstance(self.conv.padding, str)  # ConvBNAct always gives an integer padding
        padding = self.conv.padding[0]
        bits = F.pad(binarize(x), (padding,) * 4, value=-1.0)  # padded cells are 0 bits, i.e. -1
        counts = F.conv2d(bits, binarize(weight), stride=self.conv.stride)  # exact integers in float32
        return self.act(counts * scale.view(1, -1, 1, 1) + bias.view(1, -1, 1, 1))
