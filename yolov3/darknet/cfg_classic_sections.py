"""Darknet's classic (YOLOv1-era) sections: [lrn], [crop], [local], [detection] and [deconvolutional].

Defaults are those of AlexeyAB's ``src/parser.c`` (``parse_normalization``, ``parse_crop``, ``parse_local``,
``parse_detection``); [deconvolutional] is not read by the fork's parser at all, so its keys and defaults are
pjreddie's ``parse_deconvolutional``. Checks that need the input shape live in :mod:`yolov3.darknet.graph`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from yolov3.darknet.cfg_fork_sections import _check_activate_array
from yolov3.darknet.cfg_sections import MAX_SIZE, Section, check_range


@dataclass(kw_only=True)
class LrnSection(Section):
    """``[lrn]`` / ``[normalization]``: Darknet's local response normalization across channels,
    ``x / (kappa + alpha * window sum of x^2) ^ beta`` (alpha is not divided by ``size``), with the window of
    ``forward_normalization_layer`` (:mod:`yolov3.models.local_response_norm`)."""

    KIND = "lrn"
    ALIASES = ("normalization",)
    ALWAYS_WRITTEN = ("size", "alpha", "beta", "kappa")

    alpha: float = 0.0001
    beta: float = 0.75
    kappa: float = 1.0
    size: int = 5

    def validate(self) -> None:
        check_range(self, "size", 1, 1024)


@dataclass(kw_only=True)
class CropSection(Section):
    """``[crop]``: the centre ``crop_height`` x ``crop_width`` window of its input, times 2 minus 1 (as is,
    with ``noadjust=1``): ``forward_crop_layer`` at test time. Its random offsets and flips happen only in
    Darknet's training forward (flip, angle, saturation, exposure and shift are training keys here)."""

    KIND = "crop"
    ALWAYS_WRITTEN = ("crop_height", "crop_width")

    crop_height: int = 1
    crop_width: int = 1
    noadjust: int = 0

    def validate(self) -> None:
        check_range(self, "crop_height", 1, MAX_SIZE)
        check_range(self, "crop_width", 1, MAX_SIZE)


@dataclass(kw_only=True)
class LocalSection(Section):
    """``[local]``: a locally connected layer, a convolution with its own ``filters`` x C x size x size weights
    at every output location and its own bias at every output value. ``pad=1`` pads by 1 pixel (whatever the
    size); the output is ``(H - size) / stride + 1`` without padding, ``(H - 1) / stride + 1`` with it."""

    KIND = "local"
    ALWAYS_WRITTEN = ("filters", "size", "stride", "activation")

    filters: int = 1
    size: int = 1
    stride: int = 1
    pad: int = 0
    activation: str = "logistic"

    def validate(self) -> None:
        check_range(self, "filters", 1, MAX_SIZE)
        check_range(self, "size", 1, 1024)
        check_range(self, "stride", 1, 1024)
        if self.pad not in (0, 1):
            raise self.error(f"pad={self.pad} is not 0 or 1 (Darknet's local layer pads by pad pixels)")
        _check_activate_array(self, self.activation)


@dataclass(kw_only=True)
class DetectionSection(Section):
    """``[detection]``: the YOLOv1 head over a flat input of ``side * side * ((1 + coords) * num + classes)``
    values: all cells' class scores, then all (cell, box) confidences, then all (cell, box) x, y, w, h.
    Its forward applies a softmax to each cell's class scores with ``softmax=1`` and leaves the rest as is;
    ``sqrt=1`` squares w and h when boxes are read. The other keys only steer Darknet's training loss."""

    KIND = "detection"
    ALWAYS_WRITTEN = ("classes", "coords", "num", "side")

    coords: int = 1
    classes: int = 1
    rescore: int = 0
    num: int = 1
    side: int = 7
    softmax: int = 0
    sqrt: int = 0
    max_boxes: int = field(default=200, metadata={"key": "max"})
    coord_scale: float = 1.0
    forced: int = 0
    object_scale: float = 1.0
    noobject_scale: float = 1.0
    class_scale: float = 1.0
    jitter: float = 0.2
    resize: float = 1.0
    random: float = 0.0
    reorg: int = 0  # Darknet's forward has the reorg call commented out: no effect

    def validate(self) -> None:
        check_range(self, "classes", 1, MAX_SIZE)
        check_range(self, "num", 1, 4096)
        check_range(self, "side", 1, 4096)
        if self.coords != 4:
            raise self.error(
                f"coords={self.coords} is refused: Darknet's get_detection_detections reads 4 numbers per box "
                "whatever coords is, so any other value misreads the boxes; allowed: 4"
            )

    @property
    def inputs(self) -> int:
        """The flat size Darknet's ``make_detection_layer`` asserts its input has."""
        return self.side * self.side * ((1 + self.coords) * self.num + self.classes)


# pjreddie's activate_array cases that this library builds (its get_activation falls back to relu for names it
# does not know, such as mish or swish; loggy, relie, ramp, plse, stair, hardtan, lhtan are not built here)
PJREDDIE_ACTIVATIONS = ("linear", "leaky", "logistic", "relu", "elu", "selu", "tanh")


@dataclass(kw_only=True)
class DeconvolutionalSection(Section):
    """``[deconvolutional]`` / ``[deconv]``: pjreddie's transposed convolution (AlexeyAB's parser does not read
    it). Output ``(H - 1) * stride + size - 2 * padding``; ``pad=1`` means ``padding = size / 2``. With
    ``batch_normalize``: ``scales * (x - mean) / (sqrt(variance) + 1e-6) + biases`` (pjreddie's normalize_cpu),
    else ``+ biases``; then the activation. ``.weights``: as a [convolutional] (biases, [scales, rolling mean,
    rolling variance], weights), the weights (C_in, filters, size, size)."""

    KIND = "deconvolutional"
    ALIASES = ("deconv",)
    ALWAYS_WRITTEN = ("filters", "size", "stride", "activation")

    filters: int = 1
    size: int = 1
    stride: int = 1
    activation: str = "logistic"
    batch_normalize: int = 0
    pad: int = 0
    padding: int = 0

    @property
    def effective_padding(self) -> int:
        return self.size // 2 if self.pad else self.padding

    def validate(self) -> None:
        check_range(self, "filters", 1, MAX_SIZE)
        check_range(self, "size", 1, 1024)
        check_range(self, "stride", 1, 1024)
        check_range(self, "padding", 0, 1024)
        if self.activation not in PJREDDIE_ACTIVATIONS:
            raise self.error(
                f"activation={self.activation!r} is refused: pjreddie's Darknet, the one that reads "
                f"[deconvolutional], computes relu or an activation not built here for it; allowed: "
                f"{', '.join(PJREDDIE_ACTIVATIONS)}"
            )


CLASSIC_SECTION_TYPES: tuple[type[Section], ...] = (
    LrnSection,
    CropSection,
    LocalSection,
    DetectionSection,
    DeconvolutionalSection,
)
