"""Augmentation: a checked list of albumentations transforms, then Darknet's letterbox, then a tensor.

An augmentation YAML names albumentations transforms with their probability and arguments; every name
and argument is checked when the config is built (unknown name, unknown or invalid argument, a
``HorizontalFlip`` while ``horizontal_flip: false``), and the message names the transform and argument::

    normalization: darknet        # or imagenet: the tensor is ImageNet-normalized, borders are its mean
    horizontal_flip: true         # adds HorizontalFlip(p=0.5) unless listed; false forbids it
    min_visibility: 0.2           # drop boxes keeping less than this fraction of their area
    min_box_size: 2.0             # ... or narrower / lower than this many pixels
    mosaic: {probability: 1.0, mixup_probability: 0.0}
    transforms:
      - {name: Affine, p: 1.0, params: {scale: [0.5, 1.5], translate_percent: [-0.1, 0.1]}}
      - {name: ColorJitter, p: 1.0, params: {brightness: [0.667, 1.5], saturation: [0.667, 1.5], hue: [-0.1, 0.1]}}
      - {name: ToGray, p: 0.01}

:class:`DetectionTransform` runs the transforms (bounding boxes follow, clipped; remnants dropped),
letterboxes to the requested network size with :func:`yolov3.data.letterbox.letterbox_image` (borders
filled with the normalization mean, which transforms with a ``fill`` argument such as ``Affine`` also use
unless given one), and returns a :class:`TransformedSample`: image (3, H, W) float and targets (M, 5) =
(class, cx, cy, w, h) normalized. The validation transform is the letterbox alone.
"""

from __future__ import annotations

import difflib
import inspect
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

import albumentations as A
import numpy as np
import torch
from torchvision.transforms.v2 import functional as tvf

from yolov3.config_loading import apply_overrides, load_dataclass, load_yaml
from yolov3.data.letterbox import Letterbox, letterbox_image
from yolov3.data.mosaic import MosaicConfig
from yolov3.data.sample import DetectionSample

Normalization = Literal["darknet", "imagenet"]

# Border fill (uint8 RGB) per normalization: Darknet's grey 0.5 (127 of 255) or the ImageNet mean.
NORMALIZATION_FILL = MappingProxyType({"darknet": (127, 127, 127), "imagenet": (124, 116, 104)})
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Albumentations transforms that keep bounding boxes valid, by name; the YAML may use these only.
ALLOWED_TRANSFORMS = (
    # photometric (boxes unchanged)
    "MultiplicativeNoise",
    "CLAHE",
    "Posterize",
    "ToGray",
    "RandomBrightnessContrast",
    "RGBShift",
    "ColorJitter",
    "HueSaturationValue",
    "GaussNoise",
    "RandomFog",
    "RandomGamma",
    "Blur",
    "MedianBlur",
    "MotionBlur",
    "GaussianBlur",
    "ImageCompression",
    "Sharpen",
    "Equalize",
    "ChannelShuffle",
    # geometric (boxes follow the pixels)
    "HorizontalFlip",
    # the dihedral group: exact for axis-aligned boxes; for data with no up/down (cells, aerial, X-rays)
    "VerticalFlip",
    "RandomRotate90",
    "Transpose",
    "D4",
    "Affine",
    "Perspective",
    "RandomScale",
    "BBoxSafeRandomCrop",
)


def _transform_class(name: str) -> type[A.BasicTransform]:
    if name not in ALLOWED_TRANSFORMS:
        hint = difflib.get_close_matches(name, ALLOWED_TRANSFORMS, n=1)
        suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ValueError(f"unknown transform {name!r}{suggestion}; allowed: {', '.join(ALLOWED_TRANSFORMS)}")
    return getattr(A, name)


def _describe_invalid(name: str, error: Exception) -> str:
    """One line per invalid argument from albumentations' (pydantic) validation error."""
    source = error if callable(getattr(error, "errors", None)) else error.__cause__
    details = getattr(source, "errors", None)
    if callable(details):
        lines = []
        for detail in details():
            location = detail.get("loc") or ("?",)
            lines.append(f"argument {str(location[0])!r}: {detail.get('msg', '')} (got {detail.get('input')!r})")
        return f"{name}: " + "; ".join(dict.fromkeys(lines))
    return f"{name}: {error}"


@dataclass(frozen=True)
class TransformSpec:
    """One albumentations transform: its class name, probability and keyword arguments.

    Checked on construction: the name must be in :data:`ALLOWED_TRANSFORMS`, every argument must be one
    the transform accepts, and the transform is built once so that albumentations validates the values.
    """

    name: str
    p: float = 0.5
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        transform_class = _transform_class(self.name)
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"{self.name}: p must be in [0, 1], got {self.p}")
        accepted = [n for n in inspect.signature(transform_class.__init__).parameters if n not in ("self", "p")]
        for argument in self.params:
            if argument == "p":
                raise ValueError(f"{self.name}: give the probability as the spec's 'p', not in params")
            if argument not in accepted:
                hint = difflib.get_close_matches(argument, accepted, n=1)
                suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
                allowed = ", ".join(accepted)
                raise ValueError(
                    f"{self.name}: unknown argument {argument!r}{suggestion}; {self.name} accepts: {allowed}"
                )
        self.build()

    def build(self, fill: tuple[int, int, int] = NORMALIZATION_FILL["darknet"]) -> A.BasicTransform:
        """The albumentations transform; ``fill`` is its border colour unless the params set one."""
        transform_class = _transform_class(self.name)
        arguments = dict(self.params)
        if "fill" in inspect.signature(transform_class.__init__).parameters:
            arguments.setdefault("fill", fill)
        try:
            return transform_class(**arguments, p=self.p)
        except (TypeError, ValueError) as error:
            raise ValueError(_describe_invalid(self.name, error)) from error


def default_transforms() -> tuple[TransformSpec, ...]:
    """YOLOv3 training augmentation: Darknet's jitter as scale/translate, its hue/saturation/exposure.

    Darknet's ``hue=.1 saturation=1.5 exposure=1.5`` as ``ColorJitter`` (hue a fraction of the circle,
    saturation and exposure as multiplicative factors), Ultralytics' scale 0.5 / translate 0.1 as
    ``Affine``, and its rare grey / CLAHE. The flip comes from ``horizontal_flip``, mosaic from ``mosaic``.
    """
    return (
        TransformSpec("Affine", 1.0, {"scale": (0.5, 1.5), "translate_percent": (-0.1, 0.1)}),
        TransformSpec(
            "ColorJitter",
            1.0,
            {"brightness": (2 / 3, 1.5), "contrast": (1.0, 1.0), "saturation": (2 / 3, 1.5), "hue": (-0.1, 0.1)},
        ),
        TransformSpec("ToGray", 0.01),
        TransformSpec("CLAHE", 0.01),
    )


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation and the input normalization (see the module docstring for the YAML)."""

    transforms: tuple[TransformSpec, ...] = field(default_factory=default_transforms)
    horizontal_flip: bool = True
    normalization: Normalization = "darknet"
    min_visibility: float = 0.2
    min_box_size: float = 2.0
    keep_flagged_boxes: bool = False  # train on iscrowd / difficult boxes too (by default evaluation only)
    mosaic: MosaicConfig = field(default_factory=MosaicConfig)

    def __post_init__(self) -> None:
        if not self.horizontal_flip and any(spec.name == "HorizontalFlip" for spec in self.transforms):
            raise ValueError(
                "HorizontalFlip is listed in transforms but horizontal_flip is false "
                "(the dataset has left/right classes): remove it or set horizontal_flip: true"
            )
        if self.normalization not in NORMALIZATION_FILL:
            raise ValueError(
                f"normalization must be one of {', '.join(NORMALIZATION_FILL)}, got {self.normalization!r}"
            )
        if not 0.0 <= self.min_visibility <= 1.0:
            raise ValueError(f"min_visibility must be in [0, 1], got {self.min_visibility}")
        if self.min_box_size < 0:
            raise ValueError(f"min_box_size must be >= 0, got {self.min_box_size}")

    @property
    def fill(self) -> tuple[int, int, int]:
        """Border colour (uint8 RGB) of letterbox, mosaic and geometric transforms."""
        return NORMALIZATION_FILL[self.normalization]

    def training_specs(self) -> tuple[TransformSpec, ...]:
        """The transforms to run: the listed ones, plus HorizontalFlip(p=0.5) when switched on and not listed."""
        if self.horizontal_flip and not any(spec.name == "HorizontalFlip" for spec in self.transforms):
            return (*self.transforms, TransformSpec("HorizontalFlip", 0.5))
        return self.transforms


def load_augment_config(path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> AugmentConfig:
    """Read an augmentation YAML (``None``: the defaults) with ``key=value`` overrides; errors name the file."""
    mapping = apply_overrides(load_yaml(path) if path is not None else {}, list(overrides))
    return load_dataclass(AugmentConfig, mapping, source=str(path) if path is not None else "<augment>")


@dataclass
class TransformedSample:
    """A network-ready sample, with what evaluation needs to map boxes back to the original image."""

    image: torch.Tensor  # (3, H, W) float: 0..1, or ImageNet-normalized
    targets: torch.Tensor  # (M, 5) float: class, cx, cy, w, h normalized by W, H
    path: str
    image_id: int
    original_size: tuple[int, int]  # (height, width) of the image as read from disk
    letterbox: Letterbox  # placement of the (augmented) image in the network input
    image_problems: tuple[tuple[str, str], ...] = ()  # (path, reason) of unreadable images skipped on the way


class DetectionTransform:
    """Augment (training) or not (validation), letterbox to a network size, and make tensors.

    Randomness comes from one generator shared by all transforms (``reseed`` sets it): albumentations'
    own ``Compose(seed=...)`` would give every transform an identical generator, correlating them.
    """

    def __init__(self, config: AugmentConfig, train: bool, seed: int = 0) -> None:
        self.config = config
        self.train = train
        specs = config.training_specs() if train else ()
        transforms = [spec.build(config.fill) for spec in specs]
        self.moves_boxes = any(isinstance(transform, A.DualTransform) for transform in transforms)
        self.compose = None
        if transforms:
            self.compose = A.Compose(
                transforms,
                bbox_params=None
                if not self.moves_boxes
                else A.BboxParams(
                    format="pascal_voc",
                    label_fields=["labels"],
                    min_visibility=config.min_visibility,
                    min_width=config.min_box_size,
                    min_height=config.min_box_size,
                    clip=True,
                    filter_invalid_bboxes=True,
                ),
            )
        self.reseed(seed)

    def reseed(self, seed: int) -> None:
        """Restart the random sequence (each DataLoader worker calls this with its own seed)."""
        if self.compose is not None:
            self.compose.set_random_state(np.random.default_rng(seed), random.Random(seed))

    def __call__(self, sample: DetectionSample, size: tuple[int, int]) -> TransformedSample:
        """Transform ``sample`` for a network input of ``size`` = (height, width)."""
        image, boxes, labels = sample.image, sample.boxes_xyxy, sample.labels
        if self.train:
            if not self.config.keep_flagged_boxes:
                keep = ~(sample.iscrowd | sample.difficult)
                boxes, labels = boxes[keep], labels[keep]
            if self.compose is not None and not self.moves_boxes:  # photometric only: boxes stay put
                image = self.compose(image=image)["image"]
            elif self.compose is not None:
                result = self.compose(image=image, bboxes=boxes, labels=labels)
                image = result["image"]
                boxes = np.asarray(result["bboxes"], dtype=np.float32).reshape(-1, 4)  # (M, 4), (0, 4) if none
                labels = np.asarray(result["labels"], dtype=np.int64).reshape(-1)  # (M,)
        canvas, placement = letterbox_image(image, size, fill=self.config.fill)
        boxes = placement.boxes_to_network(boxes)
        targets = boxes_to_targets(boxes, labels, size)
        if self.train:  # boxes squashed to nothing by the letterbox cannot be learnt
            targets = targets[(targets[:, 3] > 0) & (targets[:, 4] > 0)]
        return TransformedSample(
            image=image_to_tensor(canvas, self.config.normalization),
            targets=targets,
            path=sample.path,
            image_id=sample.image_id,
            original_size=(sample.height, sample.width),
            letterbox=placement,
            image_problems=sample.image_problems,
        )


def boxes_to_targets(boxes_xyxy: np.ndarray, labels: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """Pixel boxes (M, 4) xyxy in an image of ``size`` = (H, W) -> targets (M, 5) class, cx, cy, w, h normalized."""
    height, width = size
    boxes = torch.as_tensor(np.asarray(boxes_xyxy, dtype=np.float32)).reshape(-1, 4)  # (M, 4)
    scale = torch.tensor([width, height, width, height], dtype=torch.float32)
    boxes = boxes.clamp(min=0).minimum(scale) / scale
    centers = (boxes[:, :2] + boxes[:, 2:]) / 2
    sizes = boxes[:, 2:] - boxes[:, :2]
    classes = torch.as_tensor(np.asarray(labels), dtype=torch.float32).reshape(-1, 1)  # (M, 1)
    return torch.cat([classes, centers, sizes], dim=1)


def image_to_tensor(image: np.ndarray, normalization: Normalization) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (3, H, W) float in 0..1 (``darknet``) or ImageNet-normalized."""
    tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255)  # (H,W,3) -> (3,H,W)
    if normalization == "imagenet":
        tensor = tvf.normalize(tensor, IMAGENET_MEAN, IMAGENET_STD)
    return tensor


def tensor_to_image(tensor: torch.Tensor, normalization: Normalization) -> np.ndarray:
    """The inverse of :func:`image_to_tensor`: (3, H, W) float -> (H, W, 3) uint8 RGB."""
    tensor = tensor.detach().float().cpu()
    if normalization == "imagenet":
        mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)  # (3,) -> (3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(3, 1, 1)  # (3,) -> (3, 1, 1)
        tensor = tensor * std + mean
    image = (tensor * 255).round().clamp(0, 255).to(torch.uint8)
    return image.permute(1, 2, 0).numpy()  # (3, H, W) -> (H, W, 3)
