"""The layer graph of a parsed cfg: which layers feed each layer, and every layer's output shape.

Darknet resolves ``[route] layers`` and ``[shortcut] from`` as relative when negative and absolute
otherwise. This module does that once, checks every reference and every shape, and returns a
:class:`LayerNode` per layer so that builders and summaries never redo the arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass

from yolov3.darknet.cfg import (
    AvgpoolSection,
    ConvolutionalSection,
    DarknetCfg,
    MaxpoolSection,
    RouteSection,
    Section,
    ShortcutSection,
    UpsampleSection,
    YoloSection,
)


@dataclass(frozen=True)
class LayerNode:
    """One layer: its section, the absolute indices it reads, and its input/output shapes (C, H, W)."""

    index: int
    section: Section
    sources: tuple[int, ...]
    input_shape: tuple[int, int, int]
    output_shape: tuple[int, int, int]

    @property
    def in_channels(self) -> int:
        return self.input_shape[0]

    @property
    def out_channels(self) -> int:
        return self.output_shape[0]


def _resolve(section: Section, index: int, reference: int, key: str) -> int:
    absolute = index + reference if reference < 0 else reference
    if not 0 <= absolute < index:
        raise section.error(
            f"{key} refers to layer {reference} (absolute {absolute}), but layer {index} can only read "
            f"layers 0..{index - 1}"
        )
    return absolute


def _conv_output(size: int, kernel: int, stride: int, padding: int, dilation: int = 1) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def build_graph(cfg: DarknetCfg, height: int | None = None, width: int | None = None) -> list[LayerNode]:
    """Resolve references and infer shapes for an input of ``height`` x ``width`` (default: [net] size)."""
    net = cfg.net
    height = height or net.height
    width = width or net.width
    if min(height, width, net.channels) < 1:
        raise net.error(f"width, height and channels must be set and positive; got {width}x{height}x{net.channels}")
    nodes: list[LayerNode] = []
    shape = (net.channels, height, width)
    for index, section in enumerate(cfg.layers):
        sources: tuple[int, ...] = (index - 1,) if index else ()
        input_shape = shape
        channels, rows, columns = shape
        if isinstance(section, ConvolutionalSection):
            if channels % section.groups:
                raise section.error(f"input channels {channels} are not divisible by groups={section.groups}")
            padding = section.effective_padding
            rows, columns = (
                _conv_output(size, section.size, section.stride, padding, section.dilation) for size in (rows, columns)
            )
            shape = (section.filters, rows, columns)
        elif isinstance(section, ShortcutSection):
            source = _resolve(section, index, section.from_layer, "from")
            if nodes[source].output_shape != shape:
                raise section.error(
                    f"adds layer {source} of shape {nodes[source].output_shape} to layer {index - 1} of shape "
                    f"{shape}; shapes must be equal"
                )
            sources = (index - 1, source)
        elif isinstance(section, RouteSection):
            sources = tuple(_resolve(section, index, reference, "layers") for reference in section.layers)
            shapes = [nodes[source].output_shape for source in sources]
            if len({shape[1:] for shape in shapes}) != 1:
                raise section.error(f"concatenates layers {list(sources)} of different sizes {shapes}")
            if any(shape[0] % section.groups for shape in shapes):
                raise section.error(f"channels {[s[0] for s in shapes]} are not divisible by groups={section.groups}")
            shape = (sum(shape[0] // section.groups for shape in shapes), *shapes[0][1:])
            input_shape = shapes[0]
        elif isinstance(section, UpsampleSection):
            shape = (channels, rows * section.stride, columns * section.stride)
        elif isinstance(section, MaxpoolSection):
            rows, columns = ((size + section.padding - section.size) // section.stride + 1 for size in (rows, columns))
            shape = (channels, rows, columns)
        elif isinstance(section, AvgpoolSection):
            shape = (channels, 1, 1)
        elif isinstance(section, YoloSection):
            expected = len(section.anchor_indices) * (section.classes + 5)
            if channels != expected:
                raise section.error(
                    f"classes={section.classes} with {len(section.anchor_indices)} anchors needs "
                    f"{len(section.anchor_indices)}*({section.classes}+5)={expected} filters in the layer before "
                    f"[yolo], but layer {index - 1} has {channels}"
                )
        if min(shape) < 1:
            raise section.error(f"output shape {shape} is empty for a {width}x{height} input")
        nodes.append(LayerNode(index, section, sources, input_shape, shape))
    return nodes
