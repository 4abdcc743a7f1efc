"""Building blocks shared by the native models and the cfg-built :class:`~yolov3.models.Darknet`.

Each block knows the Darknet section it corresponds to (``to_section``), so that native models export
to cfg text and read/write ``.weights`` through the same code as cfg-built ones.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypedDict

import torch
import torch.nn.functional as F
from torch import nn

from yolov3.darknet.cfg import ACTIVATIONS, ConvolutionalSection, MaxpoolSection, UpsampleSection

# Darknet normalizes with (x - mean) / (sqrt(var) + 1e-6); eps=1e-6 inside the sqrt is the closest
# BatchNorm2d gets (relative difference < 1e-6 for var ~ 1).
DARKNET_BN_EPS = 1e-6


def make_activation(name: str) -> nn.Module:
    """The Darknet activation ``name`` as a module (leaky has Darknet's slope 0.1)."""
    factories: dict[str, Callable[[], nn.Module]] = {
        "linear": nn.Identity,
        "leaky": lambda: nn.LeakyReLU(0.1),
        "logistic": nn.Sigmoid,
        "relu": nn.ReLU,
        "relu6": nn.ReLU6,
        "elu": nn.ELU,
        "selu": nn.SELU,
        "gelu": lambda: nn.GELU(approximate="tanh"),
        "swish": nn.SiLU,
        "mish": nn.Mish,
        "tanh": nn.Tanh,
    }
    if name not in factories:
        raise ValueError(f"unknown activation {name!r}; expected one of {', '.join(ACTIVATIONS)}")
    return factories[name]()


class ConvolutionKeys(Protocol):
    """The keys a Darknet section shares with ``[convolutional]`` (its recurrent sections have them too)."""

    size: int
    stride: int
    groups: int
    dilation: int
    batch_normalize: int
    activation: str

    @property
    def effective_padding(self) -> int: ...


class ConvOptions(TypedDict):
    """The keyword arguments of :class:`ConvBNAct` that every conv of a model shares."""

    activation: str
    bn_momentum: float


class ConvBNAct(nn.Module):
    """Conv2d, then BatchNorm2d (the conv has no bias then), then an activation: Darknet's [convolutional]."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        *,
        padding: int | None = None,
        groups: int = 1,
        dilation: int = 1,
        batch_norm: bool = True,
        activation: str = "leaky",
        bn_momentum: float = 0.03,
    ) -> None:
        super().__init__()
        padding = (kernel_size // 2) * dilation if padding is None else padding
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation=dilation,
            groups=groups,
            bias=not batch_norm,
        )
        self.bn = nn.BatchNorm2d(out_channels, eps=DARKNET_BN_EPS, momentum=bn_momentum) if batch_norm else None
        self.activation_name = activation
        self.act = make_activation(activation)

    @classmethod
    def from_section(cls, section: ConvolutionalSection, in_channels: int) -> ConvBNAct:
        return cls.from_keys(section, in_channels, section.filters)

    @classmethod
    def from_keys(cls, section: ConvolutionKeys, in_channels: int, out_channels: int) -> ConvBNAct:
        """A conv with the section's size, stride, padding, groups, dilation, batch norm and activation."""
        return cls(
            in_channels,
            out_channels,
            section.size,
            section.stride,
            padding=section.effective_padding,
            groups=section.groups,
            dilation=section.dilation,
            batch_norm=bool(section.batch_normalize),
            activation=section.activation,
        )

    def to_section(self) -> ConvolutionalSection:
        conv = self.conv
        assert not isinstance(conv.padding, str)  # ConvBNAct always gives an integer padding
        kernel, padding, dilation = conv.kernel_size[0], conv.padding[0], conv.dilation[0]
        same = padding == (kernel // 2) * dilation
        return ConvolutionalSection(
            batch_normalize=int(self.bn is not None),
            filters=conv.out_channels,
            size=kernel,
            stride=conv.stride[0],
            pad=int(same),
            padding=0 if same else padding,
            groups=conv.groups,
            dilation=dilation,
            activation=self.activation_name,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return self.act(x)


class DarknetMaxPool(nn.Module):
    """Max pooling with Darknet's padding: ``padding`` cells of -inf, ``padding // 2`` on the top/left.

    This gives tiny's 2x2 stride-1 pool (pad right/bottom) and the SPP pools (centred) exactly.
    """

    def __init__(self, size: int, stride: int, padding: int | None = None) -> None:
        super().__init__()
        self.size, self.stride = size, stride
        self.padding = size - 1 if padding is None else padding

    @property
    def pads_with_a_copy(self) -> bool:
        """True where ``forward`` pads the input with -inf cells (a copy, and a value int8 cannot hold); False
        where max_pool2d pads by itself: symmetric padding, or one more cell on the right / bottom at stride 2,
        which is ceil mode (floor((n + 1) / 2) == ceil(n / 2) output cells, and the last window starts inside
        the input, so no window is dropped)."""
        before, after = self.padding // 2, self.padding - self.padding // 2
        return not (before <= self.size // 2 and (after == before or (after == before + 1 and self.stride == 2)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        before, after = self.padding // 2, self.padding - self.padding // 2
        if not self.pads_with_a_copy:  # no copy, no Pad node in exported graphs
            return F.max_pool2d(x, self.size, self.stride, padding=before, ceil_mode=after > before)
        x = F.pad(x, (before, after, before, after), value=float("-inf"))  # e.g. tiny's 2x2 stride-1 pool
        return F.max_pool2d(x, self.size, self.stride)

    def to_section(self) -> MaxpoolSection:
        return MaxpoolSection(size=self.size, stride=self.stride, padding=self.padding)


class Upsample(nn.Module):
    """Nearest-neighbour upsampling by an integer ``stride``, times ``scale`` (Darknet's [upsample])."""

    def __init__(self, stride: int = 2, scale: float = 1.0) -> None:
        super().__init__()
        self.stride, self.scale = stride, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=self.stride, mode="nearest")
        return x * self.scale if self.scale != 1.0 else x

    def to_section(self) -> UpsampleSection:
        return UpsampleSection(stride=self.stride, scale=self.scale)


class GlobalAvgPool(nn.Module):
    """Darknet's [avgpool]: mean over the whole feature map, (B, C, H, W) -> (B, C, 1, 1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3), keepdim=True)
