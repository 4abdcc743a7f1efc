"""The section kinds of a Darknet ``.cfg`` as dataclasses: each field is a key, with Darknet's default.

Field names equal cfg keys, except where a key is a Python keyword (``from`` -> ``from_layer``) or too short
to read (``max`` -> ``max_boxes``); ``field(metadata={"key": ...})`` records the cfg spelling. [convolutional],
with its many keys and checks, lives in :mod:`yolov3.darknet.cfg_convolutional`; the newer sections of
AlexeyAB's fork in :mod:`yolov3.darknet.cfg_fork_sections`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import ClassVar

ACTIVATIONS = ("linear", "leaky", "logistic", "relu", "relu6", "elu", "selu", "gelu", "swish", "mish", "tanh")
LEARNING_RATE_POLICIES = ("constant", "step", "exp", "poly", "steps", "sig", "random", "sgdr")

logger = logging.getLogger(__name__)


class CfgError(ValueError):
    """A malformed Darknet cfg; the message starts with ``file:line: [section]``."""


# Values that parse but cannot build: (key, lowest, highest) per section kind. Darknet itself allocates
# whatever it is given; here a value outside these bounds is a CfgError naming the key and the range.
MAX_SIZE = 1 << 16
LIMITS: dict[str, tuple[tuple[str, int, int], ...]] = {
    "convolutional": (
        ("filters", 1, MAX_SIZE),
        ("size", 1, 1024),
        ("stride", 1, 1024),
        ("groups", 1, MAX_SIZE),
        ("dilation", 1, 1024),
        ("padding", 0, 1024),
    ),
    "maxpool": (
        ("size", 1, 1024),
        ("stride", 1, 1024),
        ("stride_x", 1, 1024),
        ("stride_y", 1, 1024),
        ("padding", 0, 1024),
    ),
    "upsample": (("stride", 1, 1024),),
    "route": (("groups", 1, MAX_SIZE),),
    "yolo": (("classes", 1, MAX_SIZE), ("num", 1, 4096)),
}


def check_range(section: Section, name: str, low: int, high: int, key: str | None = None) -> None:
    """Raise a CfgError naming ``key`` (default ``name``) unless ``low <= value <= high``."""
    value = getattr(section, name)
    if not low <= value <= high:
        raise section.error(f"{key or name}={value} is out of range; allowed: {low}..{high}")


ANTIALIASING = (0, 1, 2)  # Darknet: 1 = 3x3 blur (1 2 1 / 16 outer product), padding 1; 2 = 2x2 mean, no padding


def darknet_padding(section: Section, size: int, pad: int, padding: int, dilation: int) -> int:
    """The padding of a Darknet convolution (``[convolutional]`` and the inner convs of ``[crnn]`` /
    ``[conv_lstm]``): ``pad=1`` means ``size // 2``, otherwise ``padding``; im2col then pads by that times the
    dilation. Darknet sizes the output without the dilation, ``(h + 2 * padding - size) / stride + 1``, which
    is the dilated convolution's size only for ``2 * padding == size - 1``: other dilated cases are refused (the
    GEMM would read an output buffer of the wrong size)."""
    base = size // 2 if pad else padding
    if dilation != 1 and 2 * base != size - 1:
        raise section.error(
            f"dilation={dilation} with size={size} and padding {base} is refused: Darknet sizes the output as if "
            "undilated, which matches the dilated convolution only for an odd size with pad=1 (padding = size // 2)"
        )
    return base * dilation


def check_antialiasing(section: Section, value: int) -> None:
    """``antialiasing`` must be 0, 1 or 2 (Darknet treats any other non-zero value as 1; here it is an error)."""
    if value not in ANTIALIASING:
        raise section.error(f"antialiasing={value} is not one of 0, 1 (3x3 blur), 2 (2x2 blur)")


def _location(source: str, line: int, kind: str | None = None) -> str:
    return f"{source}:{line}: [{kind}]" if kind else f"{source}:{line}:"


@dataclass(kw_only=True)
class Section:
    """Base of all sections: where it was read from (not part of equality)."""

    KIND: ClassVar[str] = ""
    ALIASES: ClassVar[tuple[str, ...]] = ()
    ALWAYS_WRITTEN: ClassVar[tuple[str, ...]] = ()

    line: int = field(default=0, compare=False, repr=False)
    source: str = field(default="<cfg>", compare=False, repr=False)

    def where(self) -> str:
        return _location(self.source, self.line, self.KIND)

    def error(self, message: str) -> CfgError:
        return CfgError(f"{self.where()} {message}")

    def validate(self) -> None:
        """Checks that need more than one key; raises :class:`CfgError`."""


@dataclass(kw_only=True)
class NetSection(Section):
    """``[net]``: input size and training hyper-parameters (Darknet's ``parse_net_options``)."""

    KIND = "net"
    ALIASES = ("network",)
    ALWAYS_WRITTEN = ("batch", "subdivisions", "width", "height", "channels")

    batch: int = 1
    subdivisions: int = 1
    width: int = 0
    height: int = 0
    channels: int = 0
    inputs: int = 0
    max_crop: int = 0
    min_crop: int = 0
    momentum: float = 0.9
    decay: float = 0.0001
    learning_rate: float = 0.001
    burn_in: int = 0
    max_batches: int = 0
    policy: str = "constant"
    steps: tuple[int, ...] = ()
    scales: tuple[float, ...] = ()
    step: int = 1
    gamma: float = 1.0
    power: float = 4.0
    adam: int = 0
    B1: float = 0.9
    B2: float = 0.999
    eps: float = 1e-6  # AlexeyAB's default (pjreddie's: 1e-7)
    angle: float = 0.0
    aspect: float = 1.0
    saturation: float = 1.0
    exposure: float = 1.0
    hue: float = 0.0
    flip: int = 1
    letter_box: int = 0
    mosaic: int = 0
    mixup: int = 0
    cutmix: int = 0
    blur: int = 0
    gaussian_noise: int = 0
    label_smooth_eps: float = 0.0
    time_steps: int = 1
    max_chart_loss: float = 20.0

    def validate(self) -> None:
        for name in ("width", "height"):
            check_range(self, name, 0, MAX_SIZE)
        check_range(self, "channels", 0, 4096)
        if self.policy not in LEARNING_RATE_POLICIES:
            raise self.error(f"policy={self.policy!r} is not one of {', '.join(LEARNING_RATE_POLICIES)}")
        if len(self.steps) != len(self.scales) and self.policy == "steps":
            raise self.error(f"steps has {len(self.steps)} values but scales has {len(self.scales)}")
        if min(self.batch, self.subdivisions) < 1 or self.batch % self.subdivisions:
            raise self.error(f"batch={self.batch} must be a positive multiple of subdivisions={self.subdivisions}")


@dataclass(kw_only=True)
class ShortcutSection(Section):
    """``[shortcut]``: adds the output of layer ``from`` to the previous one (activation default linear)."""

    KIND = "shortcut"
    ALWAYS_WRITTEN = ("from_layer", "activation")

    from_layer: tuple[int, ...] = field(metadata={"key": "from"})
    activation: str = "linear"
    weights_type: str = "none"
    weights_normalization: str = "none"

    def __post_init__(self) -> None:
        if isinstance(self.from_layer, int):
            self.from_layer = (self.from_layer,)
        # parser.c's aliases
        self.weights_type = {"per_layer": "per_feature"}.get(self.weights_type, self.weights_type)
        self.weights_normalization = {"avg_relu": "relu"}.get(self.weights_normalization, self.weights_normalization)

    def validate(self) -> None:
        if not self.from_layer:
            raise self.error("from is empty")
        if self.weights_type not in ("none", "per_feature", "per_channel"):
            raise self.error(f"weights_type={self.weights_type!r} is not one of none, per_feature, per_channel")
        if self.weights_normalization not in ("none", "relu", "softmax"):
            raise self.error(f"weights_normalization={self.weights_normalization!r} is not one of none, relu, softmax")
        if self.weights_type != "none" and self.weights_normalization == "none":
            raise self.error(
                f"weights_type={self.weights_type} needs weights_normalization=relu or softmax "
                "(AlexeyAB's parse_shortcut stops with an error otherwise)"
            )
        if self.activation not in ACTIVATIONS:
            raise self.error(f"activation={self.activation!r} is not one of {', '.join(ACTIVATIONS)}")


@dataclass(kw_only=True)
class RouteSection(Section):
    """``[route]``: concatenates layers (negative = relative, else absolute), optionally one channel group."""

    KIND = "route"

    layers: tuple[int, ...]
    groups: int = 1
    group_id: int = 0

    def validate(self) -> None:
        if not self.layers:
            raise self.error("layers is empty")
        check_range(self, "groups", 1, MAX_SIZE)
        if not 0 <= self.group_id < self.groups:
            raise self.error(f"group_id={self.group_id} must be in [0, groups={self.groups})")


@dataclass(kw_only=True)
class UpsampleSection(Section):
    """``[upsample]``: nearest-neighbour upsampling by ``stride``, output multiplied by ``scale``."""

    KIND = "upsample"
    ALWAYS_WRITTEN = ("stride",)

    stride: int = 2
    scale: float = 1.0

    def validate(self) -> None:
        if self.stride < 1:
            raise self.error(f"stride={self.stride} must be at least 1 (downsampling is not supported)")
        for name, low, high in LIMITS["upsample"]:
            check_range(self, name, low, high)


@dataclass(kw_only=True)
class MaxpoolSection(Section):
    """``[maxpool]``: Darknet pads ``padding`` (default ``size - 1``) cells of -inf, ``padding // 2`` first.

    ``stride_x`` / ``stride_y`` default to ``stride``. ``maxpool_depth=1`` pools over channels instead: output
    channel ``g`` of ``out_channels`` is the maximum of input channels ``g, g + out_channels, ...`` (size, stride
    and padding are then unused). ``antialiasing`` pools with stride 1, then blurs with the strides, as in
    [convolutional] (:mod:`yolov3.models.antialiasing`).
    """

    KIND = "maxpool"
    ALIASES = ("max",)
    ALWAYS_WRITTEN = ("size", "stride")

    stride: int = 1
    stride_x: int | None = None  # Darknet: defaults to stride
    stride_y: int | None = None
    size: int | None = None  # Darknet: defaults to stride
    padding: int | None = None  # Darknet: defaults to size - 1
    maxpool_depth: int = 0
    out_channels: int = 1
    antialiasing: int = 0

    def __post_init__(self) -> None:
        if self.stride_x is None:
            self.stride_x = self.stride
        if self.stride_y is None:
            self.stride_y = self.stride
        if self.size is None:
            self.size = self.stride
        if self.padding is None:
            self.padding = self.size - 1

    @property
    def strides(self) -> tuple[int, int]:
        """(rows, columns) stride."""
        assert self.stride_y is not None and self.stride_x is not None  # defaulted in __post_init__
        return self.stride_y, self.stride_x

    def implicit_default(self, name: str) -> object:
        return {
            "stride_x": self.stride,
            "stride_y": self.stride,
            "size": self.stride,
            "padding": (self.size or self.stride) - 1,
        }.get(name)

    def validate(self) -> None:
        for name, low, high in LIMITS["maxpool"]:
            check_range(self, name, low, high)
        check_antialiasing(self, self.antialiasing)
        if self.maxpool_depth:
            check_range(self, "out_channels", 1, MAX_SIZE)
            if self.antialiasing:
                raise self.error(
                    "maxpool_depth=1 with antialiasing is refused: Darknet's depth pooling returns before the "
                    "blur, while the next layer reads the blurred size"
                )


@dataclass(kw_only=True)
class AvgpoolSection(Section):
    """``[avgpool]``: global average pooling to 1x1."""

    KIND = "avgpool"
    ALIASES = ("avg",)


@dataclass(kw_only=True)
class SoftmaxSection(Section):
    """``[softmax]``: probabilities for the classifier; forward passes logits through unchanged."""

    KIND = "softmax"
    ALIASES = ("soft",)

    groups: int = 1
    temperature: float = 1.0
    tree: str = ""  # a class tree file (yolov3.darknet.class_tree): a softmax per group of siblings
    spatial: float = 0.0  # read by Darknet, used by its GPU forward only: no effect on the CPU forward matched here

    def validate(self) -> None:
        from yolov3.darknet.class_tree import load_class_tree  # class_tree imports this module

        load_class_tree(self)  # a missing or malformed file is an error at the cfg line


@dataclass(kw_only=True)
class CostSection(Section):
    """``[cost]``: a training-time loss layer; identity in forward."""

    KIND = "cost"

    type: str = "sse"
    scale: float = 1.0
    ratio: float = 0.0

    def validate(self) -> None:
        if self.type not in ("sse", "masked", "smooth", "L1", "seg", "wgan"):
            raise self.error(f"type={self.type!r} is not a Darknet cost type")


@dataclass(kw_only=True)
class DropoutSection(Section):
    """``[dropout]``: dropout with ``probability``."""

    KIND = "dropout"

    probability: float = 0.2  # AlexeyAB (pjreddie: 0.5); identity at inference either way

    def validate(self) -> None:
        if not 0.0 <= self.probability < 1.0:
            raise self.error(f"probability={self.probability} must be in [0, 1)")


@dataclass(kw_only=True)
class YoloSection(Section):
    """``[yolo]``: a detection head; ``mask`` picks this scale's anchors out of ``anchors`` (input pixels)."""

    KIND = "yolo"
    ALWAYS_WRITTEN = ("mask", "anchors", "classes", "num")

    mask: tuple[int, ...] = ()
    anchors: tuple[float, ...] = ()
    classes: int = 20
    num: int = 1
    max_boxes: int = field(default=90, metadata={"key": "max"})
    jitter: float = 0.2
    ignore_thresh: float = 0.5
    truth_thresh: float = 1.0
    iou_thresh: float = 1.0
    random: float = 0.0
    resize: float = 1.0
    scale_x_y: float = 1.0
    iou_normalizer: float = 0.75
    cls_normalizer: float = 1.0
    obj_normalizer: float = 1.0
    iou_loss: str = "mse"
    nms_kind: str = "default"
    beta_nms: float = 0.6
    max_delta: float = 3.4028235e38
    label_smooth_eps: float = 0.0
    new_coords: int = 0  # AlexeyAB (scaled-YOLOv4, YOLOv7): the conv is logistic; w = (2 t_w)^2 * anchor

    @property
    def anchor_indices(self) -> tuple[int, ...]:
        """Darknet: without ``mask`` a [yolo] layer uses anchors ``0 .. num-1``."""
        return self.mask or tuple(range(self.num))

    @property
    def anchors_px(self) -> tuple[tuple[float, float], ...]:
        """This layer's anchors as (width, height) in input pixels."""
        return tuple((self.anchors[2 * i], self.anchors[2 * i + 1]) for i in self.anchor_indices)

    def validate(self) -> None:
        for name, low, high in LIMITS["yolo"]:
            check_range(self, name, low, high)
        pairs = len(self.anchors) // 2
        if len(self.anchors) % 2 or pairs < self.num:
            raise self.error(f"anchors has {len(self.anchors)} numbers but num={self.num} needs {2 * self.num}")
        if any(value <= 0 for value in self.anchors):
            raise self.error("anchors must be positive (width,height pairs in input pixels)")
        bad = [index for index in self.anchor_indices if not 0 <= index < pairs]
        if bad:
            raise self.error(f"mask indices {bad} out of range for num={self.num}")
        beyond = [index for index in self.anchor_indices if index >= self.num]
        if beyond:  # cspx-p7-mish.cfg: num=16 with 20 anchor pairs, masks up to 19
            logger.warning(
                "%s: mask indices %s are past num=%d: Darknet reads only the first %d anchor pairs and decodes "
                "these from past its array (undefined); the %d pairs the line lists are used here",
                self.where(), beyond, self.num, self.num, pairs,
            )  # fmt: skip
        if self.iou_loss not in ("mse", "iou", "giou", "diou", "ciou"):
            raise self.error(f"iou_loss={self.iou_loss!r} is not one of mse, iou, giou, diou, ciou")
