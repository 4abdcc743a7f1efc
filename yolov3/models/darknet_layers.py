"""PyTorch layers for Darknet sections beyond conv/route/upsample/maxpool, forward as AlexeyAB's Darknet.

Layers that read other layers' outputs have ``sources`` (absolute indices, the previous layer included)
and take those outputs as positional arguments in that order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from yolov3.darknet.cfg import DetectionSection, GaussianYoloSection, RegionSection, ShortcutSection, YoloSection
from yolov3.darknet.class_tree import load_class_tree, tree_softmax
from yolov3.models.detection_head import detection_layer_output
from yolov3.models.layers import make_activation

# Darknet's shortcut weight normalization adds this to the sum of (relu'd or exp'd) weights.
_WEIGHT_NORMALIZATION_EPS = 1e-4


class Shortcut(nn.Module):
    """[shortcut]: the previous output plus every ``from`` layer over the flat (C*H*W) indices they share
    (with equal H and W: the overlapping channels), each optionally weighted, then an activation.

    ``weights_type=per_feature`` has one weight per input (previous layer first), ``per_channel`` one per
    input and channel of the output; ``weights_normalization`` relu or softmax normalizes them across inputs
    (Darknet adds 1e-4 to the sum). The weights are a ``.weights`` tensor of ``(n + 1) * [C]`` floats.
    """

    def __init__(self, sources: tuple[int, ...], section: ShortcutSection, channels: int) -> None:
        super().__init__()
        self.sources = sources
        self.weights_type = section.weights_type
        self.normalization = section.weights_normalization
        self.act = make_activation(section.activation)
        per_input = {"none": 0, "per_feature": 1, "per_channel": channels}[section.weights_type]
        self.weight = nn.Parameter(torch.ones(len(sources) * per_input)) if per_input else None

    def _normalized_weights(self, shape: torch.Size) -> torch.Tensor:
        """(inputs, C or 1) weights broadcastable to (B, C, H, W) per input."""
        assert self.weight is not None  # only a weighted shortcut normalizes its weights
        weights = self.weight.view(len(self.sources), -1)  # (n+1, C or 1)
        if self.normalization == "relu":
            positive = weights.relu()
            weights = positive / (positive.sum(0, keepdim=True) + _WEIGHT_NORMALIZATION_EPS)
        elif self.normalization == "softmax":
            exponent = (weights - weights.max(0, keepdim=True).values).exp()
            weights = exponent / (exponent.sum(0, keepdim=True) + _WEIGHT_NORMALIZATION_EPS)
        return weights

    def forward(self, x: torch.Tensor, *others: torch.Tensor) -> torch.Tensor:
        weights = self._normalized_weights(x.shape) if self.weight is not None else None
        out = x if weights is None else x * weights[0].view(1, -1, 1, 1)
        flat = out.flatten(1)  # (B, C, H, W) -> (B, C*H*W)
        for number, other in enumerate(others, start=1):
            if weights is not None:
                other = other * _channel_weights(weights[number], other.shape[1], x.shape[1])
            other_flat = other.flatten(1)  # (B, C', H, W) -> (B, C'*H*W)
            overlap = min(flat.shape[1], other_flat.shape[1])
            flat = torch.cat([flat[:, :overlap] + other_flat[:, :overlap], flat[:, overlap:]], dim=1)
        return self.act(flat.view_as(x))


def _channel_weights(weights: torch.Tensor, channels: int, out_channels: int) -> torch.Tensor:
    """A (1 or C) weight vector of the output's channels, applied to an input of ``channels`` channels."""
    if weights.numel() == 1:
        return weights.view(1, 1, 1, 1)
    if channels <= out_channels:
        return weights[:channels].view(1, -1, 1, 1)
    padded = torch.cat([weights, weights.new_zeros(channels - out_channels)])  # beyond the output: unused
    return padded.view(1, -1, 1, 1)


class Sam(nn.Module):
    """[sam]: the previous output times layer ``from`` element by element, then an activation."""

    def __init__(self, sources: tuple[int, ...], activation: str) -> None:
        super().__init__()
        self.sources = sources
        self.act = make_activation(activation)

    def forward(self, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        return self.act(x * other)


class ScaleChannels(nn.Module):
    """[scale_channels]: layer ``from`` times the previous output, a (B, C, 1, 1) per-channel scale or, with
    ``scale_wh``, a (B, 1, H, W) map; then an activation. The output has the ``from`` layer's shape."""

    def __init__(self, sources: tuple[int, ...], activation: str) -> None:
        super().__init__()
        self.sources = sources
        self.act = make_activation(activation)

    def forward(self, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        return self.act(other * x)


def reorg_gather_index(channels: int, height: int, width: int, stride: int, forward: bool) -> torch.Tensor:
    """Darknet's ``reorg_cpu(x, w, h, c, stride, forward)`` as a gather: ``out_flat = x_flat[index]``."""
    in_channels = channels // (stride * stride)
    k, j, i = torch.meshgrid(torch.arange(channels), torch.arange(height), torch.arange(width), indexing="ij")
    in_index = i + width * (j + height * k)
    offset = k // in_channels
    w2 = i * stride + offset % stride
    h2 = j * stride + offset // stride
    out_index = w2 + width * stride * (h2 + height * stride * (k % in_channels))
    index = torch.empty(channels * height * width, dtype=torch.long)
    if forward:
        index[out_index.flatten()] = in_index.flatten()
    else:
        index[in_index.flatten()] = out_index.flatten()
    return index


class Reorg(nn.Module):
    """[reorg] / [reorg3d]: Darknet's reorg permutation of (C, H, W) into ``output_shape``."""

    index: torch.Tensor  # buffer, (C*H*W,)

    def __init__(self, index: torch.Tensor, output_shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.register_buffer("index", index, persistent=False)
        self.output_shape = output_shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, C, H, W) -> (B, C*H*W) -> gathered -> (B, C', H', W')
        return x.flatten(1)[:, self.index].view(x.shape[0], *self.output_shape)


class LocalAvgPool(nn.Module):
    """[local_avgpool]: average of the in-image cells of each window, Darknet's padding as [maxpool]."""

    def __init__(self, size: int, stride_y: int, stride_x: int, padding: int) -> None:
        super().__init__()
        self.size, self.stride, self.padding = size, (stride_y, stride_x), padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        before, after = self.padding // 2, self.padding - self.padding // 2
        padded = F.pad(x, (before, after, before, after))
        ones = F.pad(torch.ones_like(x[:, :1]), (before, after, before, after))
        total = F.avg_pool2d(padded, self.size, self.stride, divisor_override=1)
        count = F.avg_pool2d(ones, self.size, self.stride, divisor_override=1)
        return total / count.clamp(min=1)


class HeadOutput(nn.Identity):
    """Marks a [region] or [Gaussian_yolo] head: forward passes the raw output through."""

    def __init__(self, section: RegionSection | GaussianYoloSection) -> None:
        super().__init__()
        self.section = section
        self.num_classes = section.classes


def darknet_head_activation(section: object, raw: torch.Tensor) -> torch.Tensor:
    """A head's raw (B, A*(K+C), H, W) output activated as Darknet's layer forward leaves it in memory.

    [yolo]: logistic on x, y, objectness, classes (none with ``new_coords=1``); x, y scaled by ``scale_x_y``
    about 0.5; layout unchanged.
    [Gaussian_yolo]: logistic on x, sigma_x, y, sigma_y, sigma_w, sigma_h, objectness, classes; x, y scaled.
    [region]: transposed to (B, H, W, A*(5+C)); logistic on objectness only (x, y are squashed when boxes
    are read), softmax over classes when ``softmax=1``, or per sibling group with a ``tree=`` (its softmax_tree).
    [detection]: the flat (B, N) output, each cell's class scores softmaxed when ``softmax=1``.
    """
    if isinstance(section, DetectionSection):
        return detection_layer_output(section, raw)
    batch, _, height, width = raw.shape
    if isinstance(section, RegionSection):
        per_anchor = 5 + section.classes
        # (B, A*(5+C), H, W) -> (B, H, W, A, 5+C)
        out = raw.view(batch, section.num, per_anchor, height, width).permute(0, 3, 4, 1, 2).clone()
        out[..., 4] = out[..., 4].sigmoid()
        tree = load_class_tree(section)
        if tree is not None:  # softmax_tree replaces the softmax (forward_region_layer)
            out[..., 5:] = tree_softmax(out[..., 5:], tree)
        elif section.softmax:
            out[..., 5:] = out[..., 5:].softmax(-1)
        return out.reshape(batch, height, width, section.num * per_anchor)  # (B, H, W, A*(5+C))
    if not isinstance(section, YoloSection):  # [Gaussian_yolo] is a YoloSection too
        raise TypeError(f"not a [yolo], [Gaussian_yolo] or [region] section: {section!r}")
    anchors = len(section.anchor_indices)
    gaussian = isinstance(section, GaussianYoloSection)
    # (B, A*(K+C), H, W) -> (B, A, K+C, H, W)
    out = raw.view(batch, anchors, -1, height, width).clone()
    logistic = (0, 1, 2, 3, 5, 7) if gaussian else (0, 1)
    start = 8 if gaussian else 4
    if not getattr(section, "new_coords", 0):  # new_coords: the conv before is already logistic
        out[:, :, list(logistic)] = out[:, :, list(logistic)].sigmoid()
        out[:, :, start:] = out[:, :, start:].sigmoid()
    for entry in (0, 2) if gaussian else (0, 1):
        out[:, :, entry] = out[:, :, entry] * section.scale_x_y - 0.5 * (section.scale_x_y - 1)
    return out.view_as(raw)
