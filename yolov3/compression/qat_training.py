"""Quantization-aware fine-tuning of a trained detector with the project's trainer.

:func:`fine_tune_qat` takes a checkpoint and the training config it was trained with (data, augmentation,
optimizer, schedule), prepares the model for QAT (:func:`~yolov3.compression.qat.prepare_qat_detector`) and
fine-tunes it for a few epochs with :class:`~yolov3.train.trainer.Trainer` (training parts from
:func:`~yolov3.train.builder.build_parts`): same loss, step runner, schedule, validation, TensorBoard and
checkpoints as any training run. What the fine-tuning changes in the config (:func:`qat_training_config`):

- the epochs, and the learning rate times ``learning_rate_factor`` (fine-tuning, not training);
- ``train.amp: none``: fake quantization simulates int8 on float32 values; autocast would round them again;
- ``train.ema: false``: the weights trained against the quantizer are the ones exported;
- no pretrained weights are read (the checkpoint is), no backbone freezing, no weight histograms.

The run's ``best.pt`` / ``last.pt`` hold the fake-quantized graph's state (it is not a plain detector); the
deployable result is the int8 ONNX that :func:`yolov3.export.int8_qat.export_qat_onnx` writes from
:attr:`QatResult.model`. Validation scores the fake-quantized model on the ``val`` split with the activation
ranges frozen (:class:`~yolov3.compression.qat.QuantizationAwareDetector` pauses its observers in eval mode).

A fine-tuning stopped by a kill or a signal continues with ``resume=True`` and the same settings (kept in
``run_dir/qat.json``; :func:`~yolov3.compression.pipelines.record_settings` refuses others, naming each key
that changed): loading and preparing the model run again (deterministic), then the trainer continues from
``last.pt`` exactly as ``python -m yolov3.train --resume`` does. ``last.pt`` holds the whole fake-quantized
state: weights, batch-norm statistics, and every fake quantizer's observer ranges, scales, zero points and
enabled flags (buffers of the graph). What it does not hold, torch.ao's batch-norm freeze (a module attribute),
:class:`QatStatisticsCallback` sets again; so a resumed run ends equal to an uninterrupted one, and a finished
run is only read back.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path

from yolov3.atomic import remove_stale_temporaries
from yolov3.checkpoint import load_checkpoint, load_model_state
from yolov3.compression.pipelines import record_settings, settings_record
from yolov3.compression.qat import QatConfig, QuantizationAwareDetector, freeze_statistics, prepare_qat_detector
from yolov3.train.builder import build_parts
from yolov3.train.callbacks import TrainerCallback, TrainingContext
from yolov3.train.config import TrainConfig
from yolov3.train.trainer import Trainer

logger = logging.getLogger(__name__)

DEFAULT_EPOCHS = 3
DEFAULT_LEARNING_RATE_FACTOR = 0.1
# What a QAT run writes into its folder (atomically): partial temporaries of these a kill left are removed.
QAT_FILES = ("qat.json", "last.pt", "best.pt")


@dataclass(frozen=True)
class QatFineTune:
    """One QAT fine-tuning: ``weights`` (a checkpoint of ours) fine-tuned as ``config`` (the training config
    the model was trained with; data from its ``train`` split) for ``epochs`` into ``run_dir``.

    ``quantization.freeze_epoch`` ``None`` freezes batch-norm statistics and activation ranges for the last
    epoch when there are two or more (:meth:`resolved_quantization`). ``callbacks`` ride along the fine-tuning
    (e.g. an :class:`~yolov3.train.interrupt.InterruptHandler`); ``resume`` continues a stopped run in
    ``run_dir`` (see the module docstring).
    """

    config: TrainConfig
    weights: Path
    run_dir: Path
    epochs: int = DEFAULT_EPOCHS
    learning_rate_factor: float = DEFAULT_LEARNING_RATE_FACTOR
    quantization: QatConfig = field(default_factory=QatConfig)
    progress: bool = True
    resume: bool = False
    callbacks: tuple[TrainerCallback, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"QAT fine-tuning needs at least 1 epoch, got {self.epochs}")
        if not self.learning_rate_factor > 0.0:
            raise ValueError(f"learning_rate_factor must be > 0, got {self.learning_rate_factor}")

    def resolved_quantization(self) -> QatConfig:
        if self.quantization.freeze_epoch is not None or self.epochs < 2:
            return self.quantization
        return dataclasses.replace(self.quantization, freeze_epoch=self.epochs - 1)


@dataclass
class QatResult:
    """The fine-tuned fake-quantized detector, what it was trained on, and the trainer's per-epoch history."""

    model: QuantizationAwareDetector
    class_names: tuple[str, ...]
    input_size: tuple[int, int]
    run_dir: Path
    history: list[dict[str, float]]


class QatStatisticsCallback(TrainerCallback):
    """Freezes batch-norm statistics and activation ranges from ``freeze_epoch`` on (again at every epoch start,
    and at the start of a run resumed past ``freeze_epoch``: the batch-norm freeze is a module attribute that
    ``last.pt`` does not hold, while the observers' enabled flags are buffers it does; freezing is idempotent)."""

    def __init__(self, freeze_epoch: int | None) -> None:
        self.freeze_epoch = freeze_epoch

    def _freeze(self, context: TrainingContext) -> None:
        if not isinstance(context.model, QuantizationAwareDetector):
            raise TypeError(f"QatStatisticsCallback trains a QuantizationAwareDetector, got {type(context.model)}")
        freeze_statistics(context.model)

    def on_fit_start(self, context: TrainingContext) -> None:
        if self.freeze_epoch is not None and context.start_epoch > self.freeze_epoch:
            self._freeze(context)  # resumed after the freeze: frozen as the uninterrupted run is by now

    def on_epoch_start(self, context: TrainingContext, epoch: int) -> None:
        if self.freeze_epoch is not None and epoch >= self.freeze_epoch:
            self._freeze(context)
            if epoch == self.freeze_epoch:
                logger.info("QAT: batch-norm statistics and activation ranges frozen from epoch %d", epoch + 1)


def qat_training_config(config: TrainConfig, epochs: int, learning_rate_factor: float) -> TrainConfig:
    """``config`` as the QAT fine-tuning runs it (see the module docstring)."""
    optimizer = config.optimizer
    return dataclasses.replace(
        config,
        model=dataclasses.replace(config.model, weights=None, backbone_weights=None),
        optimizer=dataclasses.replace(optimizer, learning_rate=optimizer.learning_rate * learning_rate_factor),
        train=dataclasses.replace(config.train, epochs=epochs, amp="none", ema=False, freeze_backbone_epochs=0),
        logging=dataclasses.replace(config.logging, histograms_every_epochs=0),
    )


def fine_tune_qat(request: QatFineTune) -> QatResult:
    """Load ``request.weights``, prepare it for QAT and fine-tune it with the trainer in ``request.run_dir``
    (continuing its ``last.pt`` with ``request.resume``); see the module docstring."""
    run_dir = Path(request.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if remove_stale_temporaries(run_dir, QAT_FILES):
        logger.info("%s: removed the partial files that killed writes left", run_dir)
    recorded = settings_record(request, ("progress", "resume", "callbacks", "run_dir"))
    record_settings(run_dir / "qat.json", recorded, request.resume)
    config = qat_training_config(request.config, request.epochs, request.learning_rate_factor)
    quantization = request.resolved_quantization()
    parts = build_parts(config, progress=request.progress)
    checkpoint = load_checkpoint(request.weights)
    spec = checkpoint.model.to_dict() if checkpoint.model is not None else None
    if spec != parts.model_spec:
        raise ValueError(f"{request.weights}: is a {spec} model, but the config builds {parts.model_spec}")
    load_model_state(parts.model, checkpoint.inference_state)  # the EMA's weights when the checkpoint has them
    size = config.data.image_size
    detector = prepare_qat_detector(parts.model, (size, size), quantization)
    # The one place this module meets the trainer's interface.
    trainer = Trainer(
        detector, parts.train_loader, parts.val_data, config, run_dir, class_names=parts.class_names,
        model_spec=parts.model_spec,
        callbacks=[QatStatisticsCallback(quantization.freeze_epoch), *request.callbacks], progress=request.progress,
    )  # fmt: skip
    resumed = request.resume and (run_dir / "last.pt").is_file()
    if resumed:
        trainer.resume()  # the fake-quantized state: weights, statistics, observers, scales; optimizer, generators
    elif request.resume:
        logger.warning("%s: no last.pt (stopped before its first epoch completed): QAT from the start", run_dir)
    if resumed and trainer.start_epoch >= request.epochs:
        logger.info("QAT: %s finished its %d epochs before; its last.pt read back", run_dir, request.epochs)
    elif resumed:
        logger.info("QAT: resuming %s at epoch %d of %d", run_dir, trainer.start_epoch + 1, request.epochs)
    else:
        logger.info(
            "QAT: fine-tuning %s for %d epochs on the train split of %s (learning rate %g)",
            request.weights, request.epochs, config.data.dataset.root, config.optimizer.learning_rate,
        )  # fmt: skip
    result = trainer.fit()
    return QatResult(detector, parts.class_names, (size, size), run_dir, result.history)
