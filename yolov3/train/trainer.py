"""The training loop: data, model, optimizer, AMP + accumulation, EMA, validation, checkpoints, TensorBoard.

``Trainer(config, run_dir).fit()`` trains, validates every ``eval.every_epochs`` epochs with pycocotools,
keeps ``best.pt`` by mAP@0.5 and ``last.pt`` every epoch (atomically), and logs to TensorBoard under
``run_dir``. ``resume=True`` continues from ``run_dir/last.pt`` — the model, EMA, optimizer, scheduler,
scaler, generators and epoch — and reaches the same weights as an uninterrupted run (with ``workers: 0``;
with worker processes the augmentation streams are reseeded at start and differ).
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler
from tqdm import tqdm

from yolov3.config_loading import to_dict
from yolov3.data.dataset_config import build_dataset
from yolov3.data.loader import build_train_loader, build_val_loader, end_epoch_unreadable_images
from yolov3.data.transforms import NORMALIZATION_FILL
from yolov3.evaluation.dataset_gt import coco_ground_truth
from yolov3.hardware import resolve_amp
from yolov3.loss.yolo_loss import YoloLoss
from yolov3.models import create_model
from yolov3.train.callbacks import TrainerCallback
from yolov3.train.checkpoint import load_checkpoint, load_model_state, restore_rng_state, rng_state, save_checkpoint
from yolov3.train.config import TrainConfig
from yolov3.train.distributed import DistributedContext, init_distributed
from yolov3.train.ema import build_ema
from yolov3.train.optimizer import build_optimizer
from yolov3.train.pretrained import prepare_initial_weights
from yolov3.train.schedule import build_scheduler
from yolov3.train.step import StepRunner
from yolov3.train.tensorboard import TrainingBoard
from yolov3.train.validate import ValidationResult, validate

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    run_dir: Path
    best_map50: float
    last_map50: float | None
    epochs_completed: int
    history: list[dict[str, float]] = field(default_factory=list)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


class Trainer:
    """Trains one run described by a :class:`TrainConfig` into ``run_dir``."""

    def __init__(
        self,
        config: TrainConfig,
        run_dir: str | Path,
        *,
        resume: bool = False,
        progress: bool = True,
        context: DistributedContext | None = None,
        callbacks: Sequence[TrainerCallback] = (),
    ) -> None:
        self.config, self.run_dir, self.progress = config, Path(run_dir), progress
        self.callbacks = list(callbacks)
        self.context = context or init_distributed(config.device)
        self.device = self.context.device
        seed_everything(config.seed + self.context.rank, config.train.deterministic)
        self._build_data()
        self._build_model()
        self._build_optimization()
        self.runner.after_step.append(lambda step: [c.on_optimizer_step(self, step) for c in self.callbacks])
        self.board = TrainingBoard(self.run_dir, enabled=self.context.is_main)
        self.start_epoch, self.best_map50, self.history = 0, -1.0, []
        if resume:
            for callback in self.callbacks:
                callback.on_resume_start(self)
            self._resume(self.run_dir / "last.pt")

    # -- construction -------------------------------------------------------------------------------------

    def _build_data(self) -> None:
        config, context = self.config, self.context
        dataset_config = config.data.dataset
        if context.is_main:  # rank 0 first: synthetic data is generated once, and scan warnings appear once
            self.train_set = build_dataset(dataset_config, "train", progress=self.progress)
        context.barrier()
        if not context.is_main:
            self.train_set = build_dataset(dataset_config, "train", progress=False)
        self.val_set = build_dataset(dataset_config, "val", for_evaluation=True, progress=False)
        self.class_names = tuple(self.train_set.class_names)
        data = config.data
        if config.train.overfit_batches:
            self._build_overfit_batches()
            return
        sampler = DistributedSampler(
            self.train_set, context.world_size, context.rank, shuffle=True, seed=config.seed, drop_last=False
        )
        self.train_loader = build_train_loader(
            self.train_set, data.augment, data.batch_size, data.workers, data.multiscale, config.seed,
            data.image_size, sampler,
        )  # fmt: skip
        self.val_batches = build_val_loader(self.val_set, data.augment, data.batch_size, data.workers, data.image_size)
        self.ground_truth = coco_ground_truth(self.val_set)

    def _build_overfit_batches(self) -> None:
        """N fixed batches of training images (letterbox only), trained and validated on again and again."""
        data = self.config.data
        count = min(len(self.train_set), self.config.train.overfit_batches * data.batch_size)
        subset = torch.utils.data.Subset(self.train_set, range(count))
        loader = build_val_loader(subset, data.augment, data.batch_size, 0, data.image_size)
        self.train_loader = list(loader)
        self.val_batches = self.train_loader
        ground_truth = coco_ground_truth(self.train_set)
        kept = {image["id"] for image in ground_truth["images"][:count]}
        ground_truth["images"] = ground_truth["images"][:count]
        ground_truth["annotations"] = [a for a in ground_truth["annotations"] if a["image_id"] in kept]
        self.ground_truth = ground_truth

    def _build_model(self) -> None:
        config = self.config.model
        num_classes = config.num_classes or len(self.class_names)
        if num_classes != len(self.class_names):
            raise ValueError(
                f"model.num_classes is {num_classes} but the dataset has {len(self.class_names)} class names "
                f"{list(self.class_names)}"
            )
        self.model_spec = {"name": config.name, "kwargs": {"num_classes": num_classes, **config.options}}
        model = create_model(config.name, **self.model_spec["kwargs"])
        self.pretrained_report = prepare_initial_weights(model, config)
        model.to(self.device)
        if self.config.train.channels_last:
            model.to(memory_format=torch.channels_last)  # NHWC weights; batches follow in StepRunner
        if self.config.train.sync_batchnorm and self.context.is_distributed:
            if self.device.type != "cuda":
                raise ValueError("train.sync_batchnorm needs CUDA devices (SyncBatchNorm has no CPU implementation)")
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.raw_model = model
        self.head_specs = model.head_specs
        self.model = (
            DistributedDataParallel(model, device_ids=[self.device] if self.device.type == "cuda" else None)
            if self.context.is_distributed
            else model
        )
        loop = self.config.train
        self.ema = build_ema(model, loop.ema_decay) if loop.ema else None

    def _build_optimization(self) -> None:
        loop = self.config.train
        self.steps_per_epoch = math.ceil(len(self.train_loader) / loop.accumulate)
        self.total_steps = max(1, loop.epochs * self.steps_per_epoch)
        self.optimizer = build_optimizer(self.raw_model, self.config.optimizer)
        self.scheduler = build_scheduler(self.optimizer, self.total_steps, self.config.schedule)
        self.criterion = YoloLoss(self.head_specs, self.config.loss)
        self.amp = resolve_amp(loop.amp, self.device)
        if self.context.is_main:
            logger.info(
                "precision: train.amp %s -> %s (%s); channels_last %s",
                loop.amp, self.amp.mode, self.amp.reason, "on" if loop.channels_last else "off",
            )  # fmt: skip
        self.runner = StepRunner(
            self.model, self.criterion, self.optimizer, self.scheduler,
            accumulate=loop.accumulate, amp=self.amp.mode, grad_clip_norm=loop.grad_clip_norm, ema=self.ema,
            device=self.device, channels_last=loop.channels_last,
        )  # fmt: skip

    # -- checkpoints --------------------------------------------------------------------------------------

    def checkpoint(self, epoch: int) -> dict[str, Any]:
        fill = NORMALIZATION_FILL[self.config.data.augment.normalization]
        return {
            "model": self.model_spec,
            "model_state": self.raw_model.state_dict(),
            "ema_state": self.ema.module.state_dict() if self.ema is not None else None,
            "class_names": self.class_names,
            "input_size": (self.config.data.image_size, self.config.data.image_size),
            "preprocessing": {"letterbox": True, "fill": fill[0] / 255.0},
            "normalization": self.config.data.augment.normalization,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "runner": self.runner.state_dict(),
            "amp": {"mode": self.amp.mode, "reason": self.amp.reason},
            "epoch": epoch,
            "best_map50": self.best_map50,
            "history": self.history,
            "callbacks": [callback.state_dict() for callback in self.callbacks],
            "rng": rng_state(),
            "config": to_dict(self.config),
        }

    def _resume(self, path: Path) -> None:
        checkpoint = load_checkpoint(path, map_location=self.device)
        if checkpoint["model"] != self.model_spec:
            raise ValueError(f"{path}: was trained as {checkpoint['model']}, but the config builds {self.model_spec}")
        load_model_state(self.raw_model, checkpoint["model_state"])  # pruned states too (weight_orig, weight_mask)
        if self.ema is not None and checkpoint.get("ema_state") is not None:
            load_model_state(self.ema.module, checkpoint["ema_state"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.runner.load_state_dict(checkpoint["runner"])
        if self.ema is not None:
            self.ema.n_averaged.fill_(self.runner.optimizer_steps)  # one EMA update per optimizer step
        self.start_epoch = checkpoint["epoch"] + 1
        self.best_map50 = checkpoint["best_map50"]
        self.history = list(checkpoint.get("history", []))
        for callback, state in zip(self.callbacks, checkpoint.get("callbacks", []), strict=False):
            callback.load_state_dict(state)
        restore_rng_state(checkpoint["rng"])
        logger.info("resumed %s at epoch %d (step %d)", path, self.start_epoch, self.runner.optimizer_steps)

    # -- the loop -----------------------------------------------------------------------------------------

    def _set_epoch(self, epoch: int) -> None:
        loader = self.train_loader
        if hasattr(loader, "batch_sampler") and hasattr(loader.batch_sampler, "set_epoch"):
            loader.batch_sampler.set_epoch(epoch)
        if hasattr(loader, "dataset") and hasattr(loader.dataset, "reseed"):
            loader.dataset.reseed(self.config.seed * 1000 + epoch)  # in-process loading: a per-epoch stream
        frozen = epoch < self.config.train.freeze_backbone_epochs
        self.model.train()
        backbone = getattr(self.raw_model, "backbone", None)
        self.runner.frozen_parameters = list(backbone.parameters()) if frozen and backbone is not None else []
        if frozen and backbone is not None:
            backbone.eval()  # batch-norm statistics frozen too

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        sums = {"loss": 0.0, "box": 0.0, "obj": 0.0, "cls": 0.0}
        batches = len(self.train_loader)
        bar = tqdm(self.train_loader, desc=f"epoch {epoch + 1}/{self.config.train.epochs}", leave=False,
                   disable=not (self.progress and self.context.is_main))  # fmt: skip
        for index, batch in enumerate(bar):
            images = batch.images.to(self.device, non_blocking=True)
            targets = batch.targets.to(self.device, non_blocking=True)
            result = self.runner.micro_step(
                images, targets, where=f"at epoch {epoch + 1}, batch {index + 1}", last=index == batches - 1
            )
            loss = result.loss
            if not result.dropped:
                for name, value in (("loss", loss.total), ("box", loss.box), ("obj", loss.obj), ("cls", loss.cls)):
                    sums[name] += float(value.detach())
            bar.set_postfix(loss=f"{float(loss.total.detach()):.3f}", size=images.shape[-1])
            step = self.runner.optimizer_steps
            if result.stepped and step % self.config.logging.scalars_every_steps == 0:
                parts = {"loss": loss.total, "box": loss.box, "obj": loss.obj, "cls": loss.cls}
                scalars = {name: float(value.detach()) for name, value in parts.items()}
                self.board.scalars(scalars, step, prefix="train/")
                self.board.scalars({"lr": self.optimizer.param_groups[0]["lr"]}, step, prefix="train/")
        return {f"train/{name}": value / max(1, batches) for name, value in sums.items()}

    def _validate(self, epoch: int) -> ValidationResult:
        model = self.ema.module if self.ema is not None else self.raw_model
        logging_config = self.config.logging
        show = logging_config.images_every_epochs and (epoch + 1) % logging_config.images_every_epochs == 0
        return validate(
            model, self.val_batches, self.head_specs, self.ground_truth,
            conf_threshold=self.config.eval.conf_threshold, iou_threshold=self.config.eval.iou_threshold,
            max_detections=self.config.eval.max_detections, metric=self.config.eval.metric, device=self.device,
            num_sample_images=logging_config.num_images if show else 0, progress=self.progress,
        )  # fmt: skip

    def fit(self) -> TrainResult:
        loop, last_map50 = self.config.train, None
        for callback in self.callbacks:
            callback.on_fit_start(self)
        for epoch in range(self.start_epoch, loop.epochs):
            self._set_epoch(epoch)
            for callback in self.callbacks:
                callback.on_epoch_start(self, epoch)
            metrics = self._train_epoch(epoch)
            self.board.scalars(end_epoch_unreadable_images(self.train_loader, epoch + 1), epoch + 1)
            is_last = epoch == loop.epochs - 1
            result = None
            if self.context.is_main and ((epoch + 1) % self.config.eval.every_epochs == 0 or is_last):
                result = self._validate(epoch)
                last_map50 = result.map50
                metrics.update(result.scalars)
                self._log_epoch(epoch, result)
            for callback in self.callbacks:
                callback.on_epoch_end(self, epoch, metrics)
            metrics["epoch"] = epoch + 1
            self.history.append(metrics)
            self.board.scalars({k: v for k, v in metrics.items() if k != "epoch"}, epoch + 1, prefix="epoch/")
            if self.context.is_main:
                improved = result is not None and result.map50 > self.best_map50
                if improved:
                    self.best_map50 = result.map50
                checkpoint = self.checkpoint(epoch)
                # best.pt before last.pt: a run killed between the two writes redoes this epoch on resume and
                # writes the same best.pt again (the other order would keep a newer best_map50 in last.pt with
                # an older best.pt, which a later, worse epoch never replaces).
                if improved:
                    save_checkpoint(self.run_dir / "best.pt", checkpoint)
                save_checkpoint(self.run_dir / "last.pt", checkpoint)
                logger.info("epoch %d: %s", epoch + 1, ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
            self.context.barrier()
        self._finish(last_map50)
        return TrainResult(self.run_dir, self.best_map50, last_map50, loop.epochs, self.history)

    def _log_epoch(self, epoch: int, result: ValidationResult) -> None:
        step = epoch + 1
        self.board.pr_curves(result.coco, step)
        normalization = self.config.data.augment.normalization
        self.board.detections(result.sample_images, self.class_names, step, normalization)
        every = self.config.logging.histograms_every_epochs
        if every and step % every == 0:
            batch = next(iter(self.val_batches)).images[:4].to(self.device)
            self.board.histograms(self.raw_model, batch, step)

    def _finish(self, last_map50: float | None) -> None:
        config = self.config
        hyper_parameters = {
            "model": config.model.name,
            "optimizer": config.optimizer.name,
            "learning_rate": config.optimizer.learning_rate,
            "batch_size": config.data.batch_size * config.train.accumulate,
            "epochs": config.train.epochs,
            "schedule": config.schedule.policy,
            "box_loss": config.loss.box_loss,
            "image_size": config.data.image_size,
        }
        self.board.hparams(hyper_parameters, {"hparam/best_mAP50": max(self.best_map50, 0.0)})
        self.board.close()
