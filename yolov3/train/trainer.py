"""The training loop: AMP + accumulation, EMA, validation, checkpoints, TensorBoard, callbacks, DDP.

``Trainer(model, train_loader, val_data, config, run_dir, ...)`` trains the model it is given on the batches
it is given; :func:`yolov3.train.builder.build_trainer` makes those parts from a :class:`TrainConfig` (what
``python -m yolov3.train`` does). The trainer builds only its own machinery from the config: the EMA, the
optimizer and schedule, the loss, the step runner and the DDP wrapper. ``fit()`` trains, validates every
``eval.every_epochs`` epochs with pycocotools, keeps ``best.pt`` by mAP@0.5 and ``last.pt`` every epoch
(atomically), and logs to TensorBoard under ``run_dir``. :meth:`Trainer.resume` continues from
``run_dir/last.pt`` — the model, EMA, optimizer, scheduler, scaler, generators and epoch — and reaches the same
weights as an uninterrupted run (with ``workers: 0``; with worker processes the augmentation streams are
reseeded at start and differ).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from yolov3.checkpoint import (
    Checkpoint,
    ModelSpec,
    load_checkpoint,
    load_model_state,
    restore_rng_state,
    rng_state,
    save_checkpoint,
)
from yolov3.config_loading import to_dict
from yolov3.data.collate import Batch
from yolov3.data.loader import end_epoch_unreadable_images
from yolov3.data.transforms import NORMALIZATION_FILL
from yolov3.evaluation.validate import ValidationData, ValidationResult, validate_with
from yolov3.hardware import resolve_amp
from yolov3.loss.yolo_loss import YoloLoss
from yolov3.models.yolo_head import model_yolo_heads
from yolov3.train.callbacks import TrainerCallback, TrainingContext
from yolov3.train.config import TrainConfig
from yolov3.train.distributed import DistributedContext, init_distributed
from yolov3.train.ema import build_ema
from yolov3.train.memory_format import MIN_CHANNELS, to_channels_last
from yolov3.train.optimizer import build_optimizer
from yolov3.train.schedule import build_scheduler
from yolov3.train.step import StepRunner
from yolov3.train.tensorboard import TrainingBoard

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    run_dir: Path
    best_map50: float
    last_map50: float | None
    epochs_completed: int
    history: list[dict[str, float]] = field(default_factory=list)


class BatchLoader(Protocol):
    """What the trainer trains on: batches it can count (a DataLoader of ``Batch`` es, or a list of them)."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[Batch]: ...


class Trainer:
    """Trains ``model`` on ``train_loader`` as ``config`` says, validating on ``val_data``, into ``run_dir``.

    ``model`` is a detector (raw heads out, ``head_specs``) built by ``create_model(**model_spec)`` — the spec
    goes into every checkpoint so that it can be rebuilt — with ``class_names`` in its label order.
    ``train_loader`` yields :class:`~yolov3.data.collate.Batch` es (a loader whose batch sampler has
    ``set_epoch`` and whose dataset has ``reseed`` gets them called every epoch). The trainer moves the model to
    the run's device (and to channels-last, or SyncBatchNorm under DDP, when the config says so): use
    :attr:`model` afterwards, and :attr:`eval_model` for the weights validation scores.
    """

    def __init__(
        self,
        model: nn.Module,
        train_loader: BatchLoader,
        val_data: ValidationData,
        config: TrainConfig,
        run_dir: str | Path,
        *,
        class_names: Sequence[str],
        model_spec: dict[str, Any],
        callbacks: Sequence[TrainerCallback] = (),
        distributed: DistributedContext | None = None,
        progress: bool = True,
    ) -> None:
        self.config, self.run_dir, self.progress = config, Path(run_dir), progress
        self.train_loader, self.val_data = train_loader, val_data
        self.class_names, self.model_spec = tuple(class_names), model_spec
        self.callbacks = list(callbacks)
        self.distributed = distributed or init_distributed(config.device)
        self.device = self.distributed.device
        self._prepare_model(model)
        self._build_optimization()
        self.board = TrainingBoard(self.run_dir, enabled=self.distributed.is_main)
        self.start_epoch, self.best_map50 = 0, -1.0
        self.history: list[dict[str, float]] = []
        self.context = TrainingContext(
            self.model, self.ema, self.optimizer, config, self.run_dir, self.class_names, self.distributed,
            self.board, self.total_steps, self.runner.gradient_scale,
        )  # fmt: skip
        self.runner.after_step.append(self._after_step)

    # -- construction -------------------------------------------------------------------------------------

    def _prepare_model(self, model: nn.Module) -> None:
        loop = self.config.train
        model.to(self.device)
        # NHWC weights, but not the narrow stem's; the batches follow from the first NHWC convolution on.
        self.nchw_layers = to_channels_last(model) if loop.channels_last else []
        if loop.sync_batchnorm and self.distributed.is_distributed:
            if self.device.type != "cuda":
                raise ValueError("train.sync_batchnorm needs CUDA devices (SyncBatchNorm has no CPU implementation)")
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model
        self.head_specs = model_yolo_heads(model)
        self._network = (  # what the step runs: the model, or its DDP wrapper
            DistributedDataParallel(model, device_ids=[self.device] if self.device.type == "cuda" else None)
            if self.distributed.is_distributed
            else model
        )
        self.ema = build_ema(model, loop.ema_decay) if loop.ema else None

    def _build_optimization(self) -> None:
        loop = self.config.train
        self.steps_per_epoch = math.ceil(len(self.train_loader) / loop.accumulate)
        self.total_steps = max(1, loop.epochs * self.steps_per_epoch)
        self.optimizer = build_optimizer(self.model, self.config.optimizer)
        self.scheduler = build_scheduler(self.optimizer, self.total_steps, self.config.schedule)
        self.criterion = YoloLoss(self.head_specs, self.config.loss)
        self.amp = resolve_amp(loop.amp, self.device)
        if self.distributed.is_main:
            logger.info(
                "precision: train.amp %s -> %s (%s); channels_last %s",
                loop.amp, self.amp.mode, self.amp.reason, self._layout_description(),
            )  # fmt: skip
        self.runner = StepRunner(
            self._network, self.criterion, self.optimizer, self.scheduler,
            accumulate=loop.accumulate, amp=self.amp.mode, grad_clip_norm=loop.grad_clip_norm, ema=self.ema,
            device=self.device,
        )  # fmt: skip

    def _layout_description(self) -> str:
        if not self.config.train.channels_last:
            return "off"
        if not self.nchw_layers:
            return "on"
        return (f"on ({len(self.nchw_layers)} convolution(s) under {MIN_CHANNELS} channels stay NCHW: "
                f"{', '.join(self.nchw_layers)})")  # fmt: skip

    @property
    def eval_model(self) -> nn.Module:
        """The model validation scores and ``best.pt`` is chosen by: the EMA's when there is one, else :attr:`model`."""
        return self.ema.module if self.ema is not None else self.model

    def _after_step(self, step: int) -> None:
        self.context.step = step
        for callback in self.callbacks:
            callback.on_optimizer_step(self.context, step)

    # -- checkpoints --------------------------------------------------------------------------------------

    def checkpoint(self, epoch: int) -> Checkpoint:
        fill = NORMALIZATION_FILL[self.config.data.augment.normalization]
        return Checkpoint(
            model=ModelSpec.from_dict(self.model_spec),
            model_state=self.model.state_dict(),
            ema_state=self.ema.module.state_dict() if self.ema is not None else None,
            class_names=self.class_names,
            input_size=(self.config.data.image_size, self.config.data.image_size),
            preprocessing={"letterbox": True, "fill": fill[0] / 255.0},
            normalization=self.config.data.augment.normalization,
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            runner=self.runner.state_dict(),
            amp={"mode": self.amp.mode, "reason": self.amp.reason},
            epoch=epoch,
            best_map50=self.best_map50,
            history=self.history,
            callbacks=[callback.state_dict() for callback in self.callbacks],
            rng=rng_state(),
            config=to_dict(self.config),
        )

    def resume(self, path: str | Path | None = None) -> None:
        """Continue the run in ``path`` (default ``run_dir/last.pt``): callbacks' ``on_resume_start`` first, then
        the model, EMA, optimizer, schedule, scaler, callbacks, generators and epoch as the checkpoint holds them."""
        path = Path(path) if path is not None else self.run_dir / "last.pt"
        for callback in self.callbacks:
            callback.on_resume_start(self.context)
        checkpoint = load_checkpoint(path, map_location=self.device)
        if checkpoint.model is None or checkpoint.model.to_dict() != self.model_spec:
            spec = checkpoint.model.to_dict() if checkpoint.model is not None else None
            raise ValueError(f"{path}: was trained as {spec}, but the config builds {self.model_spec}")
        training = checkpoint.training_state(str(path))
        load_model_state(self.model, checkpoint.model_state)  # pruned states too (weight_orig, weight_mask)
        if self.ema is not None and checkpoint.ema_state is not None:
            load_model_state(self.ema.module, checkpoint.ema_state)
        self.optimizer.load_state_dict(training.optimizer)
        self.scheduler.load_state_dict(training.scheduler)
        self.runner.load_state_dict(training.runner)
        if self.ema is not None:
            self.ema.n_averaged.fill_(self.runner.optimizer_steps)  # one EMA update per optimizer step
        self.start_epoch = training.epoch + 1
        self.best_map50 = training.best_map50
        self.history = training.history
        for callback, state in zip(self.callbacks, training.callbacks, strict=False):
            callback.load_state_dict(state)
        restore_rng_state(training.rng)
        self.context.start_epoch, self.context.step = self.start_epoch, self.runner.optimizer_steps
        logger.info("resumed %s at epoch %d (step %d)", path, self.start_epoch, self.runner.optimizer_steps)

    # -- the loop -----------------------------------------------------------------------------------------

    def _set_epoch(self, epoch: int) -> None:
        loader = self.train_loader
        if hasattr(loader, "batch_sampler") and hasattr(loader.batch_sampler, "set_epoch"):
            loader.batch_sampler.set_epoch(epoch)
        if hasattr(loader, "dataset") and hasattr(loader.dataset, "reseed"):
            loader.dataset.reseed(self.config.seed * 1000 + epoch)  # in-process loading: a per-epoch stream
        frozen = epoch < self.config.train.freeze_backbone_epochs
        self._network.train()
        backbone = getattr(self.model, "backbone", None)
        self.runner.frozen_parameters = list(backbone.parameters()) if frozen and backbone is not None else []
        if frozen and backbone is not None:
            backbone.eval()  # batch-norm statistics frozen too
        self.context.epoch = epoch

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        sums = {"loss": 0.0, "box": 0.0, "obj": 0.0, "cls": 0.0}
        batches = len(self.train_loader)
        bar = tqdm(self.train_loader, desc=f"epoch {epoch + 1}/{self.config.train.epochs}", leave=False,
                   disable=not (self.progress and self.distributed.is_main))  # fmt: skip
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

    def validate(self, num_sample_images: int = 0) -> ValidationResult:
        """Score :attr:`eval_model` on the validation data with the config's ``eval`` settings."""
        return validate_with(
            self.eval_model, self.val_data, self.config.eval, device=self.device,
            num_sample_images=num_sample_images, progress=self.progress,
        )  # fmt: skip

    def _validate(self, epoch: int) -> ValidationResult:
        logging_config = self.config.logging
        show = logging_config.images_every_epochs and (epoch + 1) % logging_config.images_every_epochs == 0
        return self.validate(logging_config.num_images if show else 0)

    def fit(self) -> TrainResult:
        loop, last_map50 = self.config.train, None
        self.context.start_epoch, self.context.step = self.start_epoch, self.runner.optimizer_steps
        for callback in self.callbacks:
            callback.on_fit_start(self.context)
        for epoch in range(self.start_epoch, loop.epochs):
            self._set_epoch(epoch)
            for callback in self.callbacks:
                callback.on_epoch_start(self.context, epoch)
            metrics = self._train_epoch(epoch)
            self.board.scalars(end_epoch_unreadable_images(self.train_loader, epoch + 1), epoch + 1)
            is_last = epoch == loop.epochs - 1
            result = None
            if self.distributed.is_main and ((epoch + 1) % self.config.eval.every_epochs == 0 or is_last):
                result = self._validate(epoch)
                last_map50 = result.map50
                metrics.update(result.scalars)
                self._log_epoch(epoch, result)
            for callback in self.callbacks:
                callback.on_epoch_end(self.context, epoch, metrics)
            metrics["epoch"] = epoch + 1
            self.history.append(metrics)
            self.board.scalars({k: v for k, v in metrics.items() if k != "epoch"}, epoch + 1, prefix="epoch/")
            if self.distributed.is_main:
                improved = result is not None and result.map50 > self.best_map50
                if result is not None and improved:
                    self.best_map50 = result.map50
                checkpoint = self.checkpoint(epoch)
                # best.pt before last.pt: a run killed between the two writes redoes this epoch on resume and
                # writes the same best.pt again (the other order would keep a newer best_map50 in last.pt with
                # an older best.pt, which a later, worse epoch never replaces).
                if improved:
                    save_checkpoint(self.run_dir / "best.pt", checkpoint)
                save_checkpoint(self.run_dir / "last.pt", checkpoint)
                logger.info("epoch %d: %s", epoch + 1, ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
            self.distributed.barrier()
        self._finish(last_map50)
        return TrainResult(self.run_dir, self.best_map50, last_map50, loop.epochs, self.history)

    def _log_epoch(self, epoch: int, result: ValidationResult) -> None:
        step = epoch + 1
        self.board.pr_curves(result.coco, step)
        normalization = self.config.data.augment.normalization
        self.board.detections(result.sample_images, self.class_names, step, normalization)
        every = self.config.logging.histograms_every_epochs
        if every and step % every == 0:
            batch = next(iter(self.val_data.batches)).images[:4].to(self.device)
            self.board.histograms(self.model, batch, step)

    def _finish(self, last_map50: float | None) -> None:
        config = self.config
        hyper_parameters: dict[str, float | int | str | bool] = {
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
