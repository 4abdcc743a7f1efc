"""Sections of AlexeyAB's Darknet fork beyond pjreddie's YOLOv3 set (YOLOv2, YOLOv4, CSP, Gaussian YOLOv3).

Defaults are those of the fork's ``src/parser.c``. [reorg] is the fork's ``reorg_old`` layer (pjreddie's
[reorg]) and [reorg3d] its newer ``reorg`` layer; both are Darknet's ``reorg_cpu`` permutation, over the
input dimensions for [reorg] and over the output dimensions for [reorg3d].
"""

from __future__ import annotations

from dataclasses import dataclass, field

from yolov3.darknet.cfg_sections import ACTIVATIONS, MAX_SIZE, Section, YoloSection, check_range, darknet_padding
from yolov3.darknet.class_tree import check_tree_size, load_class_tree


def _check_activation(section: Section, activation: str) -> None:
    if activation not in ACTIVATIONS:
        raise section.error(f"activation={activation!r} is not one of {', '.join(ACTIVATIONS)}")


# What Darknet's activate() computes: activate_array ([activation], [connected], [sam], [scale_channels])
# returns 0 for any other value
# (relu6, swish, mish have no case there; [convolutional] uses activate_array_cpu_custom, which has them)
ACTIVATE_ARRAY_ACTIVATIONS = ("linear", "leaky", "logistic", "relu", "elu", "selu", "gelu", "tanh")


def _check_activate_array(section: Section, activation: str) -> None:
    _check_activation(section, activation)
    if activation not in ACTIVATE_ARRAY_ACTIVATIONS:
        raise section.error(
            f"activation={activation} is refused: Darknet's activate_array has no case for it and "
            f"outputs 0; allowed: {', '.join(ACTIVATE_ARRAY_ACTIVATIONS)}"
        )


@dataclass(kw_only=True)
class RegionSection(Section):
    """``[region]``: the YOLOv2 head; ``anchors`` are (w, h) pairs in grid cells, not pixels."""

    KIND = "region"
    ALWAYS_WRITTEN = ("anchors", "classes", "num", "coords")

    anchors: tuple[float, ...] = ()
    classes: int = 20
    coords: int = 4
    num: int = 1
    softmax: int = 0
    bias_match: int = 0
    max_boxes: int = field(default=30, metadata={"key": "max"})
    jitter: float = 0.2
    rescore: int = 0
    thresh: float = 0.5
    absolute: int = 0
    random: float = 0.0
    coord_scale: float = 1.0
    object_scale: float = 1.0
    noobject_scale: float = 1.0
    class_scale: float = 1.0
    tree: str = ""  # YOLO9000's class tree (yolov3.darknet.class_tree): softmax per sibling group, tree decoding
    # -1: detection zeroes an objectness below 0.5 (the fork's get_region_boxes); other values steer training only
    classfix: int = 0

    def validate(self) -> None:
        check_range(self, "classes", 1, MAX_SIZE)
        check_range(self, "num", 1, 4096)
        tree = load_class_tree(self)
        if tree is not None:
            check_tree_size(self, tree, self.classes, exact=True)
        if self.coords != 4:
            raise self.error(f"coords={self.coords} is not supported; allowed: 4 (x, y, w, h)")
        if self.anchors and len(self.anchors) != 2 * self.num:
            raise self.error(f"anchors has {len(self.anchors)} numbers but num={self.num} needs {2 * self.num}")

    @property
    def anchors_cells(self) -> tuple[tuple[float, float], ...]:
        """(width, height) per anchor in grid cells; Darknet's default bias is 0.5 where none is given."""
        if not self.anchors:
            return tuple((0.5, 0.5) for _ in range(self.num))
        return tuple((self.anchors[2 * i], self.anchors[2 * i + 1]) for i in range(self.num))


@dataclass(kw_only=True)
class GaussianYoloSection(YoloSection):
    """``[Gaussian_yolo]``: a [yolo] head whose boxes carry a variance: 4 box + 4 sigma + 1 obj + classes."""

    KIND = "Gaussian_yolo"
    BOX_OUTPUTS = 8  # x, y, w, h and the uncertainty of each

    uc_normalizer: float = 1.0
    yolo_point: str = "center"
    iou_thresh_kind: str = "iou"
    delta_normalizer: float = 1.0

    def validate(self) -> None:
        super().validate()
        if self.yolo_point not in ("center", "left_top", "right_bottom"):
            raise self.error(f"yolo_point={self.yolo_point!r} is not one of center, left_top, right_bottom")


@dataclass(kw_only=True)
class ReorgSection(Section):
    """``[reorg]``: space-to-depth by ``stride`` (``reverse=1``: depth-to-space), Darknet's old layout."""

    KIND = "reorg"
    ALWAYS_WRITTEN = ("stride",)

    stride: int = 1
    reverse: int = 0

    def validate(self) -> None:
        check_range(self, "stride", 1, 1024)


@dataclass(kw_only=True)
class Reorg3dSection(ReorgSection):
    """``[reorg3d]``: the fork's newer space-to-depth (the same permutation over the output dimensions)."""

    KIND = "reorg3d"


@dataclass(kw_only=True)
class SamSection(Section):
    """``[sam]``: the previous layer times layer ``from``, element by element, then an activation."""

    KIND = "sam"
    ALWAYS_WRITTEN = ("from_layer",)

    from_layer: int = field(metadata={"key": "from"})
    activation: str = "linear"

    def validate(self) -> None:
        _check_activate_array(self, self.activation)


@dataclass(kw_only=True)
class ScaleChannelsSection(Section):
    """``[scale_channels]``: layer ``from`` times the previous layer's per-channel values (1x1), or with
    ``scale_wh=1`` times its single-channel map, then an activation."""

    KIND = "scale_channels"
    ALWAYS_WRITTEN = ("from_layer",)

    from_layer: int = field(metadata={"key": "from"})
    scale_wh: int = 0
    activation: str = "linear"

    def validate(self) -> None:
        _check_activate_array(self, self.activation)


@dataclass(kw_only=True)
class LocalAvgpoolSection(Section):
    """``[local_avgpool]``: average pooling with Darknet's padding (as [maxpool]); padded cells do not count."""

    KIND = "local_avgpool"
    ALIASES = ("local_avg",)
    ALWAYS_WRITTEN = ("size", "stride")

    stride: int = 1
    stride_x: int | None = None
    stride_y: int | None = None
    size: int | None = None
    padding: int | None = None

    def __post_init__(self) -> None:
        self.stride_x = self.stride if self.stride_x is None else self.stride_x
        self.stride_y = self.stride if self.stride_y is None else self.stride_y
        self.size = self.stride if self.size is None else self.size
        self.padding = self.size - 1 if self.padding is None else self.padding

    def implicit_default(self, name: str) -> object:
        size = self.size or self.stride
        return {"stride_x": self.stride, "stride_y": self.stride, "size": self.stride, "padding": size - 1}.get(name)

    def validate(self) -> None:
        for name, low, high in (("size", 1, 1024), ("stride_x", 1, 1024), ("stride_y", 1, 1024), ("padding", 0, 1024)):
            check_range(self, name, low, high)


@dataclass(kw_only=True)
class EmptySection(Section):
    """``[empty]`` / ``[silence]``: passes its input through."""

    KIND = "empty"
    ALIASES = ("silence",)


@dataclass(kw_only=True)
class ContrastiveSection(Section):
    """``[contrastive]``: the fork's contrastive-embedding loss (``yolov4-tiny_contrastive.cfg``). It has no
    ``.weights`` and its forward returns at once outside training (``forward_contrastive_layer``), so here it
    passes its input through; ``yolo_layer`` must name a [yolo] layer, as Darknet requires."""

    KIND = "contrastive"
    ALWAYS_WRITTEN = ("yolo_layer",)

    classes: int = 1000
    yolo_layer: int = 0
    temperature: float = 1.0
    cls_normalizer: float = 1.0
    max_delta: float = 3.4028234663852886e38  # FLT_MAX
    contrastive_neg_max: int = 3


@dataclass(kw_only=True)
class RecurrentConvSection(Section):
    """The [convolutional]-like keys of [crnn] and [conv_lstm]: each of their inner convs is built from them."""

    size: int = 3
    stride: int = 1
    dilation: int = 1
    pad: int = 0
    padding: int = 0
    output: int = 1
    groups: int = 1
    activation: str = "linear"
    batch_normalize: int = 0

    @property
    def effective_padding(self) -> int:
        return darknet_padding(self, self.size, self.pad, self.padding, self.dilation)

    def channel_counts(self) -> dict[str, int]:
        """The channel counts that ``groups`` must divide."""
        return {"output": self.output}

    def validate(self) -> None:
        for name, low, high in (("size", 1, 1024), ("stride", 1, 1024), ("dilation", 1, 1024), ("padding", 0, 1024)):
            check_range(self, name, low, high)
        darknet_padding(self, self.size, self.pad, self.padding, self.dilation)
        counts = self.channel_counts()
        for name in (*counts, "groups"):
            check_range(self, name, 1, MAX_SIZE)
        if any(count % self.groups for count in counts.values()):
            described = " and ".join(f"{name}={count}" for name, count in counts.items())
            raise self.error(f"{described} must be divisible by groups={self.groups}")
        _check_activation(self, self.activation)


@dataclass(kw_only=True)
class CrnnSection(RecurrentConvSection):
    """``[crnn]``: a convolutional RNN of three [convolutional]-like layers (input, self, output), run as
    Darknet's inference runs it: one time step from a zero state, ``output(input(x) + self(0))``."""

    KIND = "crnn"
    ALWAYS_WRITTEN = ("output", "hidden", "size", "activation")

    hidden: int = 1
    activation: str = "logistic"
    shortcut: int = 0  # adds the previous state, zero in a single step

    def channel_counts(self) -> dict[str, int]:
        return {"output": self.output, "hidden": self.hidden}


@dataclass(kw_only=True)
class ConvLstmSection(RecurrentConvSection):
    """``[conv_lstm]``: a convolutional LSTM (convs ``u*`` on the input, ``w*`` on the previous output, ``v*``
    peepholes on the cell), run as Darknet's inference runs it: one time step from a zero state."""

    KIND = "conv_lstm"
    ALWAYS_WRITTEN = ("output", "size", "activation")

    peephole: int = 0
    shortcut: int = 0  # only used with bottleneck=1 (refused) in Darknet's GPU forward; no effect otherwise


@dataclass(kw_only=True)
class ImplicitSection(Section):
    """``[implicit]`` (YOLOR): a learned constant of shape (filters, atoms, 1), whatever the input.
    ``.weights``: its ``filters * atoms`` values; ``mean`` / ``std`` only set Darknet's random initial values."""

    KIND = "implicit"
    ALWAYS_WRITTEN = ("filters",)

    filters: int = 128
    atoms: int = 1
    mean: float = 0.0
    std: float = 0.2

    def validate(self) -> None:
        check_range(self, "filters", 1, MAX_SIZE)
        check_range(self, "atoms", 1, MAX_SIZE)


@dataclass(kw_only=True)
class ActivationSection(Section):
    """``[activation]``: Darknet's ``activate_array`` on the previous output (default linear)."""

    KIND = "activation"
    ALWAYS_WRITTEN = ("activation",)

    activation: str = "linear"

    def validate(self) -> None:
        _check_activate_array(self, self.activation)


@dataclass(kw_only=True)
class BatchnormSection(Section):
    """``[batchnorm]``: per-channel ``scales * (x - mean) / sqrt(variance + 1e-5) + biases`` (running statistics).
    ``.weights``: biases, scales, rolling mean, rolling variance, ``C`` floats each."""

    KIND = "batchnorm"


@dataclass(kw_only=True)
class ConnectedSection(Section):
    """``[connected]``: a fully connected layer on the flattened (C*H*W) input, output (output, 1, 1); with
    ``batch_normalize``, batch norm (eps 1e-5, unfused) before the biases. Activation default logistic.
    ``.weights``: biases, weights (output x inputs), then with batch norm scales, rolling mean, rolling variance."""

    KIND = "connected"
    ALIASES = ("conn",)
    ALWAYS_WRITTEN = ("output", "activation")

    output: int = 1
    activation: str = "logistic"
    batch_normalize: int = 0

    def validate(self) -> None:
        check_range(self, "output", 1, MAX_SIZE)
        _check_activate_array(self, self.activation)


FORK_SECTION_TYPES: tuple[type[Section], ...] = (
    ImplicitSection,
    ActivationSection,
    BatchnormSection,
    ConnectedSection,
    RegionSection,
    GaussianYoloSection,
    ReorgSection,
    Reorg3dSection,
    SamSection,
    ScaleChannelsSection,
    LocalAvgpoolSection,
    EmptySection,
    ContrastiveSection,
    CrnnSection,
    ConvLstmSection,
)
