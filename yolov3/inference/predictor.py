"""``Predictor``: a model plus everything needed to turn RGB images into detections in their own pixels."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, TypedDict

import numpy as np
import torch
from torch import nn

from yolov3.data.letterbox import Letterbox
from yolov3.inference.decode import decode_outputs
from yolov3.inference.detection_config import DetectionConfig
from yolov3.inference.postprocess import detect_rows
from yolov3.inference.precision import prepare_for_inference
from yolov3.inference.preprocess import Preprocessing, preprocess
from yolov3.inference.region_decode import DarknetHeadSpec, inference_head_specs
from yolov3.models import Darknet
from yolov3.models.yolo_head import YoloHeadSpec

if TYPE_CHECKING:
    from typing import Unpack  # Python 3.11+; annotations only (the package supports 3.10)

logger = logging.getLogger(__name__)

DEFAULT_INPUT_SIZE = (416, 416)


def darknet_head_specs(model: Darknet) -> list[YoloHeadSpec | DarknetHeadSpec]:
    """Head specs of a cfg-built model for inference: ``YoloHeadSpec`` for plain [yolo] heads (as
    :attr:`Darknet.head_specs`), :class:`~yolov3.inference.region_decode.DarknetHeadSpec` for [region],
    [Gaussian_yolo] and new_coords [yolo] heads, which decode through :mod:`yolov3.inference.region_decode`."""
    return inference_head_specs(model)


def model_head_specs(model: nn.Module) -> list[YoloHeadSpec | DarknetHeadSpec]:
    """Head specs of any detector of this library: ``Darknet`` (from its cfg) or a native model (``head_specs``)."""
    if isinstance(model, Darknet):
        if not model.is_detector:
            raise ValueError(
                "this Darknet cfg has no [yolo], [region] or [Gaussian_yolo] layer; it is a classifier, not a detector"
            )
        return darknet_head_specs(model)
    specs = getattr(model, "head_specs", None)
    if specs is None:
        raise ValueError(f"{type(model).__name__} is not a detector: it has no head_specs")
    return list(specs)


def model_input_size(model: nn.Module) -> tuple[int, int]:
    """The (height, width) a model was configured for: the cfg's [net], a native config's, or 416x416."""
    if isinstance(model, Darknet):
        return model.cfg.net.height, model.cfg.net.width
    config = getattr(model, "config", None)
    size = getattr(config, "input_size", None)
    return tuple(size) if size is not None else DEFAULT_INPUT_SIZE


class PredictorOptions(TypedDict, total=False):
    """The keyword arguments of :class:`Predictor` after ``input_size``, as ``from_model`` passes them on."""

    preprocessing: Preprocessing | None
    conf_threshold: float | None
    iou_threshold: float | None
    max_detections: int | None
    multi_label: bool | None
    class_agnostic: bool | None
    class_names: Sequence[str] | None
    device: torch.device | str
    batch_size: int
    output: str | None
    precision: str
    detection: DetectionConfig | None


class Predictor:
    """Runs a detector on RGB images: preprocess, forward, decode, threshold + NMS, map boxes back.

    ``predict(images)`` returns one dict per image with ``boxes`` (K, 4) xyxy in the image's own pixels,
    ``scores`` (K,) and ``labels`` (K,) int64, as CPU tensors. The model is moved to ``device``, put in
    eval mode and prepared for ``precision`` (:func:`~yolov3.inference.precision.prepare_for_inference`:
    ``"fp32"``, the default, is the model's own exact arithmetic; ``"bf16"``/``"fp16"`` fuse BatchNorms and run
    channels_last under autocast, the stem conv in fp32); forward passes run under ``torch.inference_mode()``,
    ``batch_size`` images at a time.
    The detection settings are one :class:`~yolov3.inference.detection_config.DetectionConfig` (``detection``,
    default ``DetectionConfig()``), whose fields the keyword arguments ``conf_threshold`` ... ``output`` replace
    when given. ``output="darknet"`` gives Darknet's own detections
    (:func:`~yolov3.inference.postprocess.darknet_postprocess`: every class over the threshold, NMS per class,
    no cap) instead of ``multi_label`` / ``class_agnostic`` / ``max_detections``. Each head decodes as its spec
    says: a ``YoloHeadSpec`` as Darknet's [yolo], a :class:`~yolov3.inference.region_decode.DarknetHeadSpec` as
    [region] (YOLOv2), [Gaussian_yolo] or new_coords [yolo] (:func:`model_head_specs` picks them from a cfg).
    """

    def __init__(
        self,
        model: nn.Module,
        head_specs: Sequence[YoloHeadSpec | DarknetHeadSpec],
        input_size: tuple[int, int] = DEFAULT_INPUT_SIZE,
        preprocessing: Preprocessing | None = None,
        conf_threshold: float | None = None,
        iou_threshold: float | None = None,
        max_detections: int | None = None,
        multi_label: bool | None = None,
        class_agnostic: bool | None = None,
        class_names: Sequence[str] | None = None,
        device: torch.device | str = "cpu",
        batch_size: int = 8,
        output: str | None = None,
        precision: str = "fp32",
        detection: DetectionConfig | None = None,
    ) -> None:
        self.head_specs = list(head_specs)
        if not self.head_specs:
            raise ValueError("a Predictor needs at least one head spec")
        self.num_classes = self.head_specs[0].num_classes
        height, width = input_size
        largest_stride = max(spec.stride for spec in self.head_specs)
        if height % largest_stride or width % largest_stride or min(height, width) < 1:
            raise ValueError(f"input size {height}x{width} must be a positive multiple of the stride {largest_stride}")
        if class_names is not None and len(class_names) != self.num_classes:
            raise ValueError(f"{len(class_names)} class names given but the model has {self.num_classes} classes")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.detection = (detection or DetectionConfig()).with_values(
            conf_threshold=conf_threshold, iou_threshold=iou_threshold, max_detections=max_detections,
            multi_label=multi_label, class_agnostic=class_agnostic, output=output,
        )  # fmt: skip
        self.device = torch.device(device)
        self.model = prepare_for_inference(model, precision, self.device)
        self.precision = precision
        self.input_size = (height, width)
        self.preprocessing = preprocessing or Preprocessing()
        self.class_names = list(class_names) if class_names is not None else None
        self.batch_size = batch_size

    @property
    def conf_threshold(self) -> float:
        return self.detection.conf_threshold

    @property
    def iou_threshold(self) -> float:
        return self.detection.iou_threshold

    @property
    def max_detections(self) -> int:
        return self.detection.max_detections

    @property
    def output(self) -> str:
        return self.detection.output

    @classmethod
    def from_model(
        cls, model: nn.Module, input_size: tuple[int, int] | None = None, **options: Unpack[PredictorOptions]
    ) -> Predictor:
        """A predictor for any of our detectors; the input size defaults to the model's own (or 416x416)."""
        return cls(model, model_head_specs(model), input_size or model_input_size(model), **options)

    @classmethod
    def from_darknet(
        cls,
        cfg_path: str | os.PathLike,
        weights_path: str | os.PathLike,
        input_size: tuple[int, int] | None = None,
        **options: Unpack[PredictorOptions],
    ) -> Predictor:
        """A predictor for a Darknet cfg and its ``.weights``; the input size defaults to the cfg's [net] and the
        preprocessing to Darknet's own ``letterbox_image`` (``Preprocessing.from_mode("darknet")``)."""
        model = Darknet(cfg_path)
        model.load_darknet_weights(weights_path)
        options.setdefault("preprocessing", Preprocessing.from_mode("darknet"))
        return cls.from_model(model, input_size, **options)

    def preprocess(self, images: Sequence[np.ndarray]) -> tuple[torch.Tensor, list[Letterbox]]:
        """RGB uint8 images -> a (B, 3, height, width) batch on the device and each image's placement."""
        prepared = [preprocess(image, self.input_size, self.preprocessing) for image in images]
        batch = torch.stack([tensor for tensor, _ in prepared])  # B x (3, H, W) -> (B, 3, H, W)
        return batch.to(self.device), [placement for _, placement in prepared]

    def predict_batch(self, batch: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """A preprocessed (B, 3, height, width) batch -> detections in network-input pixels."""
        with torch.inference_mode():
            decoded = decode_outputs(self.model(batch), self.head_specs, self.input_size)  # (B, N, 5+C)
            return detect_rows(decoded, self.detection)

    def predict(self, images: Sequence[np.ndarray]) -> list[dict[str, torch.Tensor]]:
        """Detections for (H, W, 3) uint8 RGB images, boxes in each image's own pixels, in batches of ``batch_size``."""
        results: list[dict[str, torch.Tensor]] = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            batch, placements = self.preprocess(chunk)
            for detections, placement in zip(self.predict_batch(batch), placements, strict=True):
                detections = {key: value.cpu() for key, value in detections.items()}
                detections["boxes"] = placement.boxes_to_original(detections["boxes"])
                results.append(detections)
        logger.debug("predicted %d images", len(images))
        return results
