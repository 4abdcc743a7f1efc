"""Evaluating a detector on a labelled split of a dataset: what ``python -m yolov3.evaluate --data`` runs.

:func:`evaluate_on_dataset` builds the split's ground truth from the dataset config, detects on it with the
same loader, thresholds and code as the trainer's validation (:func:`yolov3.evaluation.validate.validate`), and
returns the same :class:`~yolov3.evaluation.validate.ValidationResult`, so its numbers equal the trainer's for the
same checkpoint. Given a training config, its ``data`` and ``eval`` sections supply the settings.

Images are fed as the model expects: the training loader's letterbox for a model whose preprocessing is a
letterbox with OpenCV's resize (our checkpoints), otherwise the model's own
:class:`~yolov3.inference.preprocess.Preprocessing` (:class:`PreprocessingTransform`): Darknet ``.weights``
get Darknet's ``letterbox_image``, as ``detect`` gives them.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, TypeVar

import torchvision.transforms.v2.functional as tvf
from torch.utils.data import DataLoader, Dataset, SequentialSampler

from yolov3.config_loading import ConfigError, load_dataclass, load_yaml
from yolov3.data.collate import collate_detections
from yolov3.data.data_config import DataConfig
from yolov3.data.dataset_config import DatasetConfig, build_dataset, load_dataset_config
from yolov3.data.loader import TransformedDataset, build_val_loader
from yolov3.data.sample import DetectionSample, sized
from yolov3.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    AugmentConfig,
    Normalization,
    TransformedSample,
    boxes_to_targets,
)
from yolov3.evaluation.dataset_gt import coco_ground_truth
from yolov3.evaluation.validate import EvalConfig, ValidationResult, validate
from yolov3.evaluation.voc import VocReport, evaluate_voc
from yolov3.inference.detection_config import EVALUATION_DETECTION
from yolov3.inference.model_loading import ONNX_RUNTIME, LoadedModel
from yolov3.inference.precision import check_precision, prepare_for_inference
from yolov3.inference.preprocess import Preprocessing, preprocess

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetEvaluationSettings:
    """How detections are made for evaluation; ``None`` takes the training config's value (else the default)."""

    split: Literal["train", "val", "test"] = "val"
    image_size: int | None = None  # default: the training config's data.image_size, else the model's input size
    conf_threshold: float | None = None  # default: EVALUATION_DETECTION's 0.001, as for mAP
    iou_threshold: float | None = None  # default 0.6
    max_detections: int | None = None  # default 300
    batch_size: int | None = None  # default 8
    workers: int = 0
    device: str = "cpu"
    precision: str = "fp32"  # fp32 (exact), bf16 or fp16: see yolov3.inference.precision
    num_sample_images: int = 0  # images kept with their detections and truth, for a picture


@dataclass(frozen=True)
class DataSource:
    """A dataset config and, when it came from a training config, that config's settings."""

    dataset: DatasetConfig
    augment: AugmentConfig | None
    image_size: int | None
    batch_size: int | None
    conf_threshold: float | None
    iou_threshold: float | None
    max_detections: int | None


def training_data_source(data: DataConfig, evaluation: EvalConfig) -> DataSource:
    """What evaluation takes from a training config's ``data`` and ``eval`` sections."""
    return DataSource(
        data.dataset, data.augment, data.image_size, data.batch_size,
        evaluation.conf_threshold, evaluation.iou_threshold, evaluation.max_detections,
    )  # fmt: skip


def read_data_source(path: str | os.PathLike) -> DataSource:
    """A dataset YAML, or a training config (``data.dataset`` with its ``data`` and ``eval`` settings).

    A training config's ``data`` and ``eval`` sections are read and checked as the trainer reads them
    (:class:`~yolov3.data.data_config.DataConfig`, :class:`~yolov3.evaluation.validate.EvalConfig`); the
    other sections (model, optimizer, ...) are not evaluation's business."""
    path = Path(path)
    mapping = load_yaml(path)
    data = mapping.get("data") if isinstance(mapping, dict) else None
    if isinstance(data, dict) and isinstance(data.get("dataset"), dict):
        data_config = load_dataclass(DataConfig, data, source=str(path), prefix="data.")
        evaluation = load_dataclass(EvalConfig, mapping.get("eval"), source=str(path), prefix="eval.")
        return training_data_source(data_config, evaluation)
    return DataSource(load_dataset_config(path), None, None, None, None, None, None)


@dataclass
class DatasetEvaluation:
    """A :class:`ValidationResult` with what produced it, and VOC AP@0.5 (area) beside COCO's numbers."""

    result: ValidationResult
    voc: VocReport
    class_names: tuple[str, ...]
    split: str
    num_images: int
    normalization: Normalization
    inference: str = ""  # how the model ran: "PyTorch, precision bf16 (autocast, stem conv fp32), BN fused, ..."
    # or "onnxruntime 1.x (CPUExecutionProvider, int8 QDQ)"


T = TypeVar("T")


def _pick(value: T | None, fallback: T) -> T:
    return fallback if value is None else value


class PreprocessingTransform:
    """The validation transform through :func:`~yolov3.inference.preprocess.preprocess` with a model's own
    :class:`Preprocessing` (Darknet's ``letterbox_image``, a stretch), in place of the training letterbox."""

    def __init__(self, preprocessing: Preprocessing, normalization: str = "darknet") -> None:
        self.preprocessing, self.normalization = preprocessing, normalization

    def reseed(self, seed: int) -> None:
        """Nothing random here; :class:`~yolov3.data.loader.TransformedDataset` calls it."""

    def __call__(self, sample: DetectionSample, size: tuple[int, int]) -> TransformedSample:
        tensor, placement = preprocess(sample.image, size, self.preprocessing)  # (3, height, width) in 0..1
        if self.normalization == "imagenet":
            tensor = tvf.normalize(tensor, IMAGENET_MEAN, IMAGENET_STD)
        return TransformedSample(
            image=tensor,
            targets=boxes_to_targets(placement.boxes_to_network(sample.boxes_xyxy), sample.labels, size),
            path=sample.path,
            image_id=sample.image_id,
            original_size=(sample.height, sample.width),
            letterbox=placement,
        )


def uses_training_letterbox(preprocessing: Preprocessing) -> bool:
    """True when the training loader's validation letterbox is this preprocessing (OpenCV's resize, kept aspect)."""
    return preprocessing.letterbox and preprocessing.resampling == "opencv"


def evaluation_loader(
    dataset: Dataset, augment: AugmentConfig, preprocessing: Preprocessing, batch_size: int, workers: int, size: int
) -> DataLoader:
    """Batches of ``dataset`` in order at ``size``: the trainer's validation loader, or ``preprocessing``'s."""
    if uses_training_letterbox(preprocessing):
        return build_val_loader(dataset, augment, batch_size, workers, size)
    transformed = TransformedDataset(dataset, PreprocessingTransform(preprocessing, augment.normalization), size)
    return DataLoader(
        transformed,
        batch_size=batch_size,
        sampler=SequentialSampler(sized(dataset)),
        num_workers=workers,
        collate_fn=collate_detections,
        persistent_workers=workers > 0,
    )


def evaluate_on_dataset(
    loaded: LoadedModel, source: DataSource, settings: DatasetEvaluationSettings = DatasetEvaluationSettings()
) -> DatasetEvaluation:
    """Detect on ``settings.split`` of ``source`` with ``loaded`` and score it (COCO, per class, VOC)."""
    check_precision(settings.precision)  # before the dataset is built
    loaded.check_precision(settings.precision)  # an ONNX graph runs at its own
    dataset = build_dataset(source.dataset, settings.split, for_evaluation=True, progress=False)
    names = tuple(dataset.class_names)
    if len(names) != loaded.num_classes:
        raise ConfigError(
            f"{loaded.source}: the model has {loaded.num_classes} classes, the dataset's {settings.split} split has "
            f"{len(names)} {list(names)}"
        )
    if loaded.class_names is not None and tuple(loaded.class_names) != names:
        logger.warning("the model's class names %s differ from the dataset's %s", loaded.class_names, names)
    augment = source.augment or AugmentConfig()
    augment = replace(augment, normalization=loaded.normalization)
    image_size = int(_pick(settings.image_size, _pick(source.image_size, loaded.input_size[0])))
    if loaded.runtime == ONNX_RUNTIME:  # a graph takes the one size it was exported at: the config's is no default
        image_size = int(_pick(settings.image_size, loaded.input_size[0]))
        loaded.check_input_size((image_size, image_size))  # the loader letterboxes to a square
    batch_size = int(_pick(settings.batch_size, _pick(source.batch_size, 8)))
    batches = evaluation_loader(dataset, augment, loaded.preprocessing, batch_size, settings.workers, image_size)
    ground_truth = coco_ground_truth(dataset)
    logger.info(
        "evaluating %s on %s (%d images) at %d px, %s preprocessing", loaded.source, settings.split, len(dataset),
        image_size, loaded.preprocessing.mode,
    )  # fmt: skip
    model = prepare_for_inference(loaded.model, settings.precision, settings.device)
    detection = EVALUATION_DETECTION.with_values(  # the settings', else the training config's, else mAP's
        conf_threshold=source.conf_threshold, iou_threshold=source.iou_threshold, max_detections=source.max_detections
    ).with_values(
        conf_threshold=settings.conf_threshold, iou_threshold=settings.iou_threshold,
        max_detections=settings.max_detections,
    )  # fmt: skip
    result = validate(
        model, batches, loaded.head_specs, ground_truth, detection=detection, metric="coco", device=settings.device,
        num_sample_images=settings.num_sample_images, progress=True,
    )  # fmt: skip
    voc = evaluate_voc(ground_truth, result.detections)
    inference = loaded.backend if loaded.runtime == ONNX_RUNTIME else f"{loaded.backend}, {model.settings.describe()}"
    return DatasetEvaluation(result, voc, names, settings.split, len(dataset), loaded.normalization, inference)
