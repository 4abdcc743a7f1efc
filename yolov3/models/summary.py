"""A model summary like Darknet's start-up table: per layer, type, filters, size, shapes and BFLOPs.

Models that describe themselves as Darknet layers (``Darknet``, the native Darknet-53 / YOLOv3 /
YOLOv3-tiny) are summarized from their cfg graph, without running them. Others (the MobileNet
backbones) are summarized from one forward pass, a row per convolution and pooling module.
BFLOPs count multiply-adds of convolutions as 2 operations, as Darknet does (bias, BN and activations
are not counted).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from yolov3.darknet.cfg import (
    ConvolutionalSection,
    DarknetCfg,
    MaxpoolSection,
    RouteSection,
    ShortcutSection,
    UpsampleSection,
    YoloSection,
)
from yolov3.darknet.graph import build_graph
from yolov3.models.darknet_io import DarknetIO

# Darknet's own short names in its start-up table.
_SHORT_KINDS = {"convolutional": "conv", "maxpool": "max", "avgpool": "avg", "shortcut": "res"}


@dataclass(frozen=True)
class LayerRow:
    """One row of the table; shapes are (C, H, W)."""

    index: int
    kind: str
    filters: int | None
    detail: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    bflops: float


@dataclass(frozen=True)
class ModelSummary:
    rows: list[LayerRow]
    parameters: int
    input_size: tuple[int, int]

    @property
    def bflops(self) -> float:
        return sum(row.bflops for row in self.rows)

    def format(self) -> str:
        def shape(values: tuple[int, ...]) -> str:
            return " x ".join(str(value) for value in (values[2], values[1], values[0])) if values else ""

        lines = [
            f"{'layer':>5} {'type':<10} {'filters':>7}  {'size/stride':<14} {'input':>16}  ->  {'output':>16}  BFLOPs"
        ]
        for row in self.rows:
            filters = "" if row.filters is None else str(row.filters)
            line = (
                f"{row.index:>5} {row.kind:<10} {filters:>7}  {row.detail:<14} {shape(row.input_shape):>16}  ->  "
                f"{shape(row.output_shape):>16}"
            )
            lines.append(line + (f"  {row.bflops:6.3f}" if row.bflops else ""))
        height, width = self.input_size
        lines.append(f"Total: {self.parameters:,} parameters, {self.bflops:.2f} BFLOPs at {width}x{height}")
        return "\n".join(lines)


def conv_bflops(section: ConvolutionalSection, in_channels: int, out_height: int, out_width: int) -> float:
    return 2 * section.filters * (in_channels // section.groups) * section.size**2 * out_height * out_width / 1e9


def summarize_cfg(cfg: DarknetCfg, height: int | None = None, width: int | None = None) -> list[LayerRow]:
    """Rows for every layer of a cfg at ``height`` x ``width`` (default: the [net] size)."""
    rows = []
    for node in build_graph(cfg, height, width):
        section, bflops, filters, detail = node.section, 0.0, None, ""
        if isinstance(section, ConvolutionalSection):
            filters = section.filters
            detail = f"{section.size} x {section.size} / {section.stride}"
            if section.groups > 1:
                detail += f" g{section.groups}"
            if section.antialiasing:
                detail += f" AA{section.antialiasing}"
            bflops = conv_bflops(section, node.in_channels, *node.output_shape[1:])
        elif isinstance(section, MaxpoolSection):
            stride_y, stride_x = section.strides
            stride = f"{stride_x}x{stride_y}" if stride_x != stride_y else f"{stride_x}"
            detail = f"{section.size} x {section.size} / {stride}" + (
                f" AA{section.antialiasing}" * bool(section.antialiasing)
            )
            if section.maxpool_depth:
                detail = f"over channels -> {section.out_channels}"
        elif isinstance(section, UpsampleSection):
            detail = f"x{section.stride}"
        elif isinstance(section, RouteSection):
            detail = " ".join(str(source) for source in node.sources)
        elif isinstance(section, ShortcutSection):
            detail = f"from {node.sources[1]}"
        elif isinstance(section, YoloSection):
            detail = f"{section.classes} classes"
        kind = _SHORT_KINDS.get(section.KIND, section.KIND)
        rows.append(LayerRow(node.index, kind, filters, detail, node.input_shape, node.output_shape, bflops))
    return rows


def _summarize_by_hooks(model: nn.Module, height: int, width: int) -> list[LayerRow]:
    rows: list[LayerRow] = []

    def record(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        input_shape, output_shape = tuple(inputs[0].shape[1:]), tuple(output.shape[1:])
        if isinstance(module, nn.Conv2d):
            kernel, stride = module.kernel_size[0], module.stride[0]
            detail = f"{kernel} x {kernel} / {stride}" + (f" g{module.groups}" if module.groups > 1 else "")
            bflops = 2 * module.weight.numel() * output_shape[1] * output_shape[2] / 1e9
            rows.append(LayerRow(len(rows), "conv", module.out_channels, detail, input_shape, output_shape, bflops))
        else:
            rows.append(LayerRow(len(rows), type(module).__name__.lower(), None, "", input_shape, output_shape, 0.0))

    pooling = (nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.Upsample)
    handles = [
        module.register_forward_hook(record)
        for module in model.modules()
        if isinstance(module, (nn.Conv2d, *pooling)) or type(module).__name__ in ("DarknetMaxPool", "Upsample")
    ]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, _input_channels(model), height, width))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return rows


def _input_channels(model: nn.Module) -> int:
    first_conv = next(module for module in model.modules() if isinstance(module, nn.Conv2d))
    return first_conv.in_channels


def summarize(model: nn.Module, input_size: tuple[int, int] | int = 416) -> ModelSummary:
    """Summarize any model of this library at ``input_size`` (an int or (height, width))."""
    height, width = (input_size, input_size) if isinstance(input_size, int) else input_size
    try:
        cfg = model.to_darknet_cfg() if isinstance(model, DarknetIO) else None
    except NotImplementedError:
        cfg = None
    rows = summarize_cfg(cfg, height, width) if cfg is not None else _summarize_by_hooks(model, height, width)
    parameters = sum(parameter.numel() for parameter in model.parameters())
    return ModelSummary(rows, parameters, (height, width))
