"""The layer graph of a parsed cfg: which layers feed each layer, and every layer's output shape.

Darknet resolves ``[route] layers`` and ``[shortcut] from`` as relative when negative and absolute
otherwise. This module does that once, checks every reference and every shape, and returns a
:class:`LayerNode` per layer so that builders and summaries never redo the arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass

from yolov3.darknet.cfg import (
    CLASSIC_SECTION_TYPES,
    RECURRENT_SECTION_TYPES,
    ActivationSection,
    AvgpoolSection,
    BatchnormSection,
    ConnectedSection,
    ContrastiveSection,
    ConvLstmSection,
    ConvolutionalSection,
    CrnnSection,
    DarknetCfg,
    DetectionSection,
    GaussianYoloSection,
    ImplicitSection,
    LocalAvgpoolSection,
    MaxpoolSection,
    RegionSection,
    ReorgSection,
    RouteSection,
    SamSection,
    ScaleChannelsSection,
    Section,
    ShortcutSection,
    UpsampleSection,
    YoloSection,
)
from yolov3.darknet.classic_shapes import classic_output_shape
from yolov3.darknet.conv_sharing import check_shared_source
from yolov3.darknet.recurrent_shapes import check_gru_reader, recurrent_output_shape

MAX_CONV_WEIGHTS = 1 << 28  # 1 GiB of float32 in one layer: more is a typo, not a network
# Values in one layer's output for one image: PyTorch's kernels index with 32-bit integers beyond this.
MAX_LAYER_VALUES = (1 << 31) - 1
# A [reorg] builds a gather index of its C*H*W values (int64) when the model is built.
MAX_REORG_VALUES = 1 << 26

# GaussianYoloSection is a YoloSection; DetectionSection is YOLOv1's head
HEAD_SECTIONS = (YoloSection, RegionSection, DetectionSection)


def head_box_outputs(section: Section) -> int:
    """Numbers per anchor before the class scores: 4 box + 1 objectness ([Gaussian_yolo]: 8 box + 1)."""
    return (GaussianYoloSection.BOX_OUTPUTS if isinstance(section, GaussianYoloSection) else 4) + 1


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


def blur_output(size: int, stride: int, antialiasing: int) -> int:
    """The size after Darknet's anti-aliasing blur: 3x3 with padding 1 (``antialiasing=1``) or 2x2 without (2)."""
    kernel, padding = (2, 0) if antialiasing == 2 else (3, 1)
    return _conv_output(size, kernel, stride, padding)


def _antialiased(section: Section) -> bool:
    return isinstance(section, (ConvolutionalSection, MaxpoolSection)) and bool(section.antialiasing)


def _check_references(section: Section, nodes: list[LayerNode], references: tuple[int, ...]) -> None:
    """Darknet's [route], [shortcut] ``from``, [sam] and [scale_channels] read a layer's ``outputs`` and
    ``out_w``/``out_h``, which an anti-aliased layer leaves at its un-blurred (stride 1) size: refused."""
    for source in references:
        if _antialiased(nodes[source].section):
            raise section.error(
                f"reads layer {source}, an anti-aliased [{nodes[source].section.KIND}]: Darknet reads it at its "
                "size before the blur (a garbled buffer); only the next layer may read an anti-aliased layer"
            )


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
            groups = section.effective_groups  # Darknet ignores groups in an xnor layer
            if channels % groups:
                raise section.error(f"input channels {channels} are not divisible by groups={section.groups}")
            check_shared_source(section, index, channels, nodes)
            if (
                section.xnor
                and channels % 32
                and (section.size, section.effective_padding, section.strides) != (3, 1, (1, 1))
            ):
                raise section.error(
                    f"xnor=1 on {channels} input channels (not a multiple of 32) needs size=3, stride=1 and padding 1: "
                    "Darknet's CPU XNOR forward has no other case (it prints 'Error: is no non-optimized version' "
                    "and convolves an all-zero input)"
                )
            weights = section.filters * (channels // groups) * section.size**2
            if weights > MAX_CONV_WEIGHTS:
                raise section.error(
                    f"filters={section.filters} x {channels // groups} input channels x size={section.size}^2"
                    f" = {weights:,} weights; allowed: at most {MAX_CONV_WEIGHTS:,} per layer"
                )
            padding = section.effective_padding
            strides = (1, 1) if section.antialiasing else section.strides  # the blur takes the strides
            rows, columns = (
                _conv_output(size, section.size, stride, padding, section.dilation)
                for size, stride in zip((rows, columns), strides, strict=True)
            )
            if section.antialiasing:
                rows, columns = (
                    blur_output(size, stride, section.antialiasing)
                    for size, stride in zip((rows, columns), section.strides, strict=True)
                )
            shape = (section.filters, rows, columns)
        elif isinstance(section, (CrnnSection, ConvLstmSection)):
            if channels % section.groups:
                raise section.error(f"input channels {channels} are not divisible by groups={section.groups}")
            if isinstance(section, CrnnSection):
                weights = (channels + section.hidden + section.output) * section.hidden // section.groups
            else:  # per gate (4): a u conv on the input, a w conv on the previous output; 3 v convs on the cell
                recurrent = 4 + (3 if section.peephole else 0)
                weights = (4 * channels + recurrent * section.output) * section.output // section.groups
            weights *= section.size**2
            if weights > MAX_CONV_WEIGHTS:
                raise section.error(f"{weights:,} weights; allowed: at most {MAX_CONV_WEIGHTS:,} per layer")
            output_size = tuple(
                _conv_output(extent, section.size, section.stride, section.effective_padding, section.dilation)
                for extent in (rows, columns)
            )
            if output_size != (rows, columns):
                raise section.error(
                    f"size={section.size}, stride={section.stride} and padding {section.effective_padding} change the "
                    f"{rows}x{columns} input's size; Darknet's [{section.KIND}] keeps its state at the input size"
                )
            shape = (section.output, rows, columns)
        elif isinstance(section, ShortcutSection):
            # Darknet adds each `from` layer over the flat (C*H*W) indices both have: with equal H, W and
            # fewer or more channels, the overlapping channels. Sizes must agree for that to mean anything.
            sources = (index - 1, *(_resolve(section, index, reference, "from") for reference in section.from_layer))
            _check_references(section, nodes, sources[1:])
            for source in sources[1:]:
                if nodes[source].output_shape[1:] != shape[1:]:
                    raise section.error(
                        f"adds layer {source} of shape {nodes[source].output_shape} to layer {index - 1} of shape "
                        f"{shape}; their height and width must be equal"
                    )
        elif isinstance(section, (SamSection, ScaleChannelsSection)):
            source = _resolve(section, index, section.from_layer, "from")
            sources = (index - 1, source)
            _check_references(section, nodes, (source,))
            other = nodes[source].output_shape
            if isinstance(section, SamSection):
                valid = other == shape
            elif section.scale_wh:
                valid = channels == 1 and other[1:] == shape[1:]
            else:
                valid = (rows, columns) == (1, 1) and other[0] == channels
            if not valid:
                raise section.error(
                    f"cannot combine layer {index - 1} of shape {shape} with layer {source} of shape {other}"
                )
            shape = other
        elif isinstance(section, ReorgSection):
            stride = section.stride
            if channels * rows * columns > MAX_REORG_VALUES:
                raise section.error(
                    f"reorders a {channels}x{rows}x{columns} input of {channels * rows * columns:,} values; "
                    f"allowed: at most {MAX_REORG_VALUES:,} (a smaller [net] width and height)"
                )
            if section.reverse:
                if channels % (stride * stride):
                    raise section.error(f"{channels} channels are not divisible by stride*stride={stride * stride}")
                if type(section) is not ReorgSection and (channels // (stride * stride)) % (stride * stride):
                    raise section.error(
                        f"reverse=1 gives {channels // (stride * stride)} channels, not divisible by stride*stride="
                        f"{stride * stride}: Darknet's [reorg3d] runs reorg_cpu over its output, which then reads "
                        "outside it (or divides by zero)"
                    )
                shape = (channels // (stride * stride), rows * stride, columns * stride)
            else:
                if rows % stride or columns % stride:
                    raise section.error(f"a {rows}x{columns} input is not divisible by stride={stride}")
                if type(section) is ReorgSection and channels % (stride * stride):
                    raise section.error(
                        f"Darknet's old [reorg] layout needs channels divisible by stride*stride={stride * stride}, "
                        f"got {channels}"
                    )
                shape = (channels * stride * stride, rows // stride, columns // stride)
        elif isinstance(section, LocalAvgpoolSection):
            # __post_init__ resolves Darknet's defaults (size = stride, padding = size - 1, stride_x/y = stride)
            assert section.padding is not None and section.size is not None
            assert section.stride_x is not None and section.stride_y is not None
            rows = (rows + section.padding - section.size) // section.stride_y + 1
            columns = (columns + section.padding - section.size) // section.stride_x + 1
            shape = (channels, rows, columns)
        elif isinstance(section, RouteSection):
            sources = tuple(_resolve(section, index, reference, "layers") for reference in section.layers)
            _check_references(section, nodes, sources)
            shapes = [nodes[source].output_shape for source in sources]
            if len({shape[1:] for shape in shapes}) != 1:
                raise section.error(f"concatenates layers {list(sources)} of different sizes {shapes}")
            if any(shape[0] % section.groups for shape in shapes):
                raise section.error(f"channels {[s[0] for s in shapes]} are not divisible by groups={section.groups}")
            shape = (sum(shape[0] // section.groups for shape in shapes), *shapes[0][1:])
            input_shape = shapes[0]
        elif isinstance(section, UpsampleSection):
            shape = (channels, rows * section.stride, columns * section.stride)
        elif isinstance(section, ContrastiveSection):  # passes its input through; must name a [yolo] layer
            target = _resolve(section, index, section.yolo_layer, "yolo_layer") if section.yolo_layer else -1
            if target < 0 or type(nodes[target].section) is not YoloSection:
                raise section.error(f"yolo_layer={section.yolo_layer} must refer to a [yolo] layer, as in Darknet")
        elif isinstance(section, MaxpoolSection):
            # __post_init__ resolves Darknet's defaults (size = stride, padding = size - 1)
            assert section.padding is not None and section.size is not None
            if section.maxpool_depth:  # over channels: size, stride and padding are unused
                if section.out_channels > channels:
                    raise section.error(
                        f"out_channels={section.out_channels} is more than the {channels} input channels: Darknet "
                        "fills the channels beyond them with -FLT_MAX"
                    )
                shape = (section.out_channels, rows, columns)
            else:
                strides = (1, 1) if section.antialiasing else section.strides
                rows, columns = (
                    (size + section.padding - section.size) // stride + 1
                    for size, stride in zip((rows, columns), strides, strict=True)
                )
                if section.antialiasing:
                    rows, columns = (
                        blur_output(size, stride, section.antialiasing)
                        for size, stride in zip((rows, columns), section.strides, strict=True)
                    )
                shape = (channels, rows, columns)
        elif isinstance(section, AvgpoolSection):
            shape = (channels, 1, 1)
        elif isinstance(section, ImplicitSection):  # a constant: the input is not read
            shape = (section.filters, section.atoms, 1)
        elif isinstance(section, ConnectedSection):
            inputs = channels * rows * columns
            if inputs * section.output > MAX_CONV_WEIGHTS:
                raise section.error(
                    f"output={section.output} x {inputs:,} inputs = {inputs * section.output:,} weights; allowed: "
                    f"at most {MAX_CONV_WEIGHTS:,} per layer"
                )
            shape = (section.output, 1, 1)
        elif isinstance(section, (ActivationSection, BatchnormSection)):
            pass  # the input's shape
        elif isinstance(section, RECURRENT_SECTION_TYPES):  # [rnn], [gru], [lstm], [history]
            shape = recurrent_output_shape(section, shape)
        elif isinstance(section, CLASSIC_SECTION_TYPES):  # [lrn], [crop], [local], [detection]
            shape = classic_output_shape(section, shape)
        elif isinstance(section, (YoloSection, RegionSection)):  # the heads with anchors ([detection]: above)
            anchors = section.num if isinstance(section, RegionSection) else len(section.anchor_indices)
            per_anchor = section.classes + head_box_outputs(section)
            if channels != anchors * per_anchor:
                raise section.error(
                    f"classes={section.classes} with {anchors} anchors needs {anchors}*{per_anchor}="
                    f"{anchors * per_anchor} filters in the layer before [{section.KIND}], but layer {index - 1} "
                    f"has {channels}"
                )
        if min(shape) < 1:
            raise section.error(f"output shape {shape} is empty for a {width}x{height} input")
        if shape[0] * shape[1] * shape[2] > MAX_LAYER_VALUES:
            raise section.error(
                f"output shape {shape} holds {shape[0] * shape[1] * shape[2]:,} values per image for a "
                f"{width}x{height} input; allowed: at most {MAX_LAYER_VALUES:,}"
            )
        check_gru_reader(section, index, {source: nodes[source].section for source in sources})
        nodes.append(LayerNode(index, section, sources, input_shape, shape))
    return nodes


def head_stride(node: LayerNode, net_height: int, net_width: int) -> int:
    """The stride of a detection head's grid: the one integer that divides the input into it in both directions
    (``CfgError`` naming the layer otherwise)."""
    _, grid_height, grid_width = node.output_shape
    stride = net_height // grid_height
    if stride * grid_height != net_height or stride * grid_width != net_width:
        raise node.section.error(
            f"layer {node.index} has a {grid_height}x{grid_width} grid for a {net_height}x{net_width} input; "
            "expected the same integer stride in both directions"
        )
    return stride
