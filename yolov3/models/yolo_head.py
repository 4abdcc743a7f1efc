"""What a decoder or loss needs to know about each YOLO output (anchors, stride, class count), and the config
fields every YOLO model shares."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from yolov3.darknet.cfg import YoloSection

# Darknet's COCO anchors (width, height in input pixels), from yolov3.cfg and yolov3-tiny.cfg.
COCO_ANCHORS_PX = (
    (10, 13),
    (16, 30),
    (33, 23),
    (30, 61),
    (62, 45),
    (59, 119),
    (116, 90),
    (156, 198),
    (373, 326),
)
COCO_TINY_ANCHORS_PX = ((10, 14), (23, 27), (37, 58), (81, 82), (135, 169), (344, 319))


@dataclass(frozen=True)
class YoloHeadSpec:
    """One detection scale: its anchors (input pixels), stride, classes and Darknet's ``scale_x_y``."""

    anchors_px: tuple[tuple[float, float], ...]
    stride: int
    num_classes: int
    scale_x_y: float = 1.0

    @property
    def num_anchors(self) -> int:
        return len(self.anchors_px)

    @property
    def out_channels(self) -> int:
        return self.num_anchors * (5 + self.num_classes)


def yolo_section(
    anchors_px: tuple[tuple[float, float], ...],
    mask: tuple[int, ...],
    num_classes: int,
    ignore_thresh: float = 0.7,
) -> YoloSection:
    """A [yolo] section with Darknet's published YOLOv3 training keys."""
    return YoloSection(
        mask=mask,
        anchors=tuple(float(value) for pair in anchors_px for value in pair),
        classes=num_classes,
        num=len(anchors_px),
        jitter=0.3,
        ignore_thresh=ignore_thresh,
        truth_thresh=1.0,
        random=1.0,
    )


@dataclass(frozen=True)
class DetectorConfig:
    """What every YOLO model config has: classes, the anchors and which of them each head uses (heads ordered
    coarse to fine, as in Darknet), the activation, the batch-norm momentum and the [net] input size."""

    NUM_HEADS: ClassVar[int] = 3

    num_classes: int = 80
    anchors_px: tuple[tuple[float, float], ...] = COCO_ANCHORS_PX
    anchor_masks: tuple[tuple[int, ...], ...] = ((6, 7, 8), (3, 4, 5), (0, 1, 2))
    activation: str = "leaky"
    bn_momentum: float = 0.03
    input_size: tuple[int, int] = (416, 416)  # (height, width), written to [net]

    def __post_init__(self) -> None:
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {self.num_classes}")
        validate_anchors(self.anchors_px, self.anchor_masks, num_heads=self.NUM_HEADS)


def validate_anchors(anchors_px: tuple, anchor_masks: tuple, num_heads: int) -> None:
    """Raise ``ValueError`` unless the masks give ``num_heads`` groups of valid anchor indices."""
    if len(anchor_masks) != num_heads:
        raise ValueError(f"anchor_masks has {len(anchor_masks)} groups; this model has {num_heads} heads")
    for mask in anchor_masks:
        bad = [index for index in mask if not 0 <= index < len(anchors_px)]
        if bad or not mask:
            raise ValueError(f"anchor mask {mask} must be non-empty indices into the {len(anchors_px)} anchors")
    for pair in anchors_px:
        if len(pair) != 2 or min(pair) <= 0:
            raise ValueError(f"anchor {pair} must be a positive (width, height) pair in input pixels")


def model_yolo_heads(model: nn.Module) -> list[YoloHeadSpec]:
    """A trainable detector's ``head_specs`` (``Darknet``, ``YOLOv3`` and ``YOLOv3Tiny`` each have them), typed.

    A type checker reads an ``nn.Module``'s attributes as ``Tensor | Module``; this checks what it gets instead.
    Raises ``AttributeError`` for a model without ``head_specs``, as reading the attribute did.
    """
    specs: object = model.head_specs
    if not isinstance(specs, (list, tuple)) or not all(isinstance(spec, YoloHeadSpec) for spec in specs):
        raise TypeError(f"{type(model).__name__}.head_specs is not a list of YoloHeadSpec: {specs!r}")
    return list(specs)
