"""The parts of a training run, made from a :class:`TrainConfig`: what ``python -m yolov3.train`` trains.

:func:`build_parts` seeds the generators (``seed`` + rank), builds the datasets (rank 0 first under DDP), the
training loader (or, with ``train.overfit_batches``, a few fixed batches), the validation data and the model
(with its pretrained weights); :func:`build_trainer` hands them to a :class:`~yolov3.train.trainer.Trainer`
and, with ``resume=True``, continues the run in ``run_dir`` from its ``last.pt``::

    trainer = build_trainer(load_train_config("configs/shapes.yaml"), "logs/shapes", callbacks=[...])
    trainer.fit()

The parts can be replaced before they reach the trainer (another model, another loader): build them with
:func:`build_parts`, then ``Trainer(parts.model, parts.train_loader, parts.val_data, config, run_dir,
class_names=parts.class_names, model_spec=parts.model_spec)``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DistributedSampler

from yolov3.data.collate import Batch
from yolov3.data.dataset_config import build_dataset
from yolov3.data.detection_dataset import DetectionDataset
from yolov3.data.loader import build_train_loader, build_val_loader
from yolov3.evaluation.dataset_gt import coco_ground_truth
from yolov3.evaluation.validate import ValidationData
from yolov3.models import create_model
from yolov3.train.callbacks import TrainerCallback
from yolov3.train.config import TrainConfig
from yolov3.train.distributed import DistributedContext, init_distributed
from yolov3.train.pretrained import PretrainedReport, prepare_initial_weights
from yolov3.train.trainer import Trainer


@dataclass
class TrainingParts:
    """A model (on the CPU, initial weights loaded), its training batches and its validation data."""

    model: nn.Module
    model_spec: dict[str, Any]  # {"name", "kwargs"} for create_model: how checkpoints rebuild the model
    class_names: tuple[str, ...]
    train_loader: Sequence[Batch] | torch.utils.data.DataLoader
    val_data: ValidationData
    train_set: DetectionDataset
    val_set: DetectionDataset
    pretrained_report: PretrainedReport | None = None  # what prepare_initial_weights loaded, if anything


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def build_parts(
    config: TrainConfig, distributed: DistributedContext | None = None, progress: bool = True
) -> TrainingParts:
    """Seed, then build the datasets, loaders, validation data and model that ``config`` describes."""
    distributed = distributed or init_distributed(config.device)
    seed_everything(config.seed + distributed.rank, config.train.deterministic)
    dataset_config = config.data.dataset
    if distributed.is_main:  # rank 0 first: synthetic data is generated once, and scan warnings appear once
        train_set = build_dataset(dataset_config, "train", progress=progress)
    distributed.barrier()
    if not distributed.is_main:
        train_set = build_dataset(dataset_config, "train", progress=False)
    val_set = build_dataset(dataset_config, "val", for_evaluation=True, progress=False)
    class_names = tuple(train_set.class_names)
    data = config.data
    train_loader: Sequence[Batch] | torch.utils.data.DataLoader
    if config.train.overfit_batches:
        train_loader, val_data = overfit_batches(config, train_set)
    else:
        sampler: DistributedSampler[int] = DistributedSampler(
            train_set, distributed.world_size, distributed.rank, shuffle=True, seed=config.seed, drop_last=False
        )
        train_loader = build_train_loader(
            train_set, data.augment, data.batch_size, data.workers, data.multiscale, config.seed, data.image_size,
            sampler,
        )  # fmt: skip
        val_data = validation_data(config, val_set)
    model, model_spec, report = build_model(config, class_names)
    return TrainingParts(model, model_spec, class_names, train_loader, val_data, train_set, val_set, report)


def validation_data(
    config: TrainConfig, val_set: DetectionDataset | None = None, progress: bool = False
) -> ValidationData:
    """The validation batches (letterbox only) and COCO ground truth of ``config``'s ``val`` split, as the trainer
    scores them; ``val_set`` when it is built already."""
    data = config.data
    if val_set is None:
        val_set = build_dataset(data.dataset, "val", for_evaluation=True, progress=progress)
    loader = build_val_loader(val_set, data.augment, data.batch_size, data.workers, data.image_size)
    return ValidationData(loader, coco_ground_truth(val_set))


def overfit_batches(config: TrainConfig, train_set: DetectionDataset) -> tuple[list[Batch], ValidationData]:
    """N fixed batches of training images (letterbox only), trained and validated on again and again."""
    data = config.data
    count = min(len(train_set), config.train.overfit_batches * data.batch_size)
    subset = torch.utils.data.Subset(train_set, range(count))
    batches = list(build_val_loader(subset, data.augment, data.batch_size, 0, data.image_size))
    ground_truth = coco_ground_truth(train_set)
    kept = {image["id"] for image in ground_truth["images"][:count]}
    ground_truth["images"] = ground_truth["images"][:count]
    ground_truth["annotations"] = [a for a in ground_truth["annotations"] if a["image_id"] in kept]
    return batches, ValidationData(batches, ground_truth)


def build_model(
    config: TrainConfig, class_names: Sequence[str]
) -> tuple[nn.Module, dict[str, Any], PretrainedReport | None]:
    """The model of ``config.model`` for ``class_names``, with its initial weights; its spec; what was loaded."""
    model_config = config.model
    num_classes = model_config.num_classes or len(class_names)
    if num_classes != len(class_names):
        raise ValueError(
            f"model.num_classes is {num_classes} but the dataset has {len(class_names)} class names {list(class_names)}"
        )
    model_spec: dict[str, Any] = {
        "name": model_config.name,
        "kwargs": {"num_classes": num_classes, **model_config.options},
    }
    model = create_model(model_config.name, **model_spec["kwargs"])
    report = prepare_initial_weights(model, model_config)
    return model, model_spec, report


def build_trainer(
    config: TrainConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    distributed: DistributedContext | None = None,
    callbacks: Sequence[TrainerCallback] = (),
) -> Trainer:
    """A :class:`Trainer` of the parts :func:`build_parts` makes; ``resume`` continues it from ``run_dir/last.pt``."""
    distributed = distributed or init_distributed(config.device)
    parts = build_parts(config, distributed, progress)
    trainer = trainer_from_parts(
        parts, config, run_dir, callbacks=callbacks, distributed=distributed, progress=progress
    )
    if resume:
        trainer.resume()
    return trainer


def trainer_from_parts(
    parts: TrainingParts,
    config: TrainConfig,
    run_dir: str | Path,
    *,
    callbacks: Sequence[TrainerCallback] = (),
    distributed: DistributedContext | None = None,
    progress: bool = True,
) -> Trainer:
    """A :class:`Trainer` of ``parts``, with ``callbacks``."""
    return Trainer(
        parts.model, parts.train_loader, parts.val_data, config, run_dir, class_names=parts.class_names,
        model_spec=parts.model_spec, callbacks=callbacks, distributed=distributed, progress=progress,
    )  # fmt: skip
