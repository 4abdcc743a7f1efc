"""Scoring a held-out split (``test``) during training, against training wall-clock time.

:class:`HeldOutEvaluation` is a :class:`~yolov3.train.callbacks.TrainerCallback` that, at chosen epochs,
evaluates the model the trainer validates (the EMA when there is one) on another split of the training
config's dataset exactly as ``python -m yolov3.evaluate --weights ... --data <config> --split test`` would
(:func:`~yolov3.evaluation.dataset_run.evaluate_on_dataset`, with the config's image size, batch size and
``eval`` thresholds), and keeps a :class:`HeldOutRecord` per evaluation: epochs done, training minutes
*excluding* the time spent in these evaluations, mAP@0.5, mAP@[.5:.95] and per-class AP::

    held_out = HeldOutEvaluation(split="test", every_epochs=5)
    build_trainer(config, run_dir, callbacks=[held_out]).fit()
    for record in held_out.records: print(record.epoch, record.minutes, record.map50)

The records and the clock go into every checkpoint, so a resumed run continues both. Under DDP only rank 0
evaluates.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from yolov3.data.dataset_config import Split
from yolov3.data.transforms import NORMALIZATION_FILL
from yolov3.evaluation.dataset_run import (
    DatasetEvaluation,
    DatasetEvaluationSettings,
    DataSource,
    evaluate_on_dataset,
    training_data_source,
)
from yolov3.inference.model_loading import LoadedModel
from yolov3.inference.preprocess import Preprocessing
from yolov3.train.callbacks import TrainerCallback, TrainingContext
from yolov3.train.config import TrainConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeldOutRecord:
    """One held-out evaluation. ``epoch`` counts completed epochs (0: before training); ``per_class`` maps a
    class name to ``{"ap50": AP@0.5, "ap": AP@[.5:.95]}`` (None for a class without ground truth)."""

    epoch: int
    minutes: float  # training wall-clock since fit start, without the held-out evaluations
    map50: float
    map: float  # COCO AP@[.5:.95]
    per_class: dict[str, dict[str, float | None]] = field(default_factory=dict)
    val_map50: float | None = None  # the trainer's validation mAP@0.5 at this epoch, when it validated
    evaluation_seconds: float = 0.0  # how long this evaluation took (not counted in ``minutes``)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HeldOutRecord:
        return cls(**data)


def data_source_from_config(config: TrainConfig) -> DataSource:
    """What ``evaluate --data <training config>`` reads from a training config, from an already loaded one."""
    return training_data_source(config.data, config.eval)


def record_from_evaluation(
    evaluation: DatasetEvaluation, epoch: int, minutes: float, val_map50: float | None = None, seconds: float = 0.0
) -> HeldOutRecord:
    """A :class:`HeldOutRecord` of the COCO numbers of ``evaluation``."""
    coco = evaluation.result.coco
    per_class = {entry.name: {"ap50": entry.ap50, "ap": entry.ap} for entry in coco.per_class}
    return HeldOutRecord(
        epoch, minutes, max(float(coco.stats["AP50"]), 0.0), max(float(coco.stats["AP"]), 0.0), per_class,
        val_map50, seconds,
    )  # fmt: skip


class HeldOutEvaluation(TrainerCallback):
    """Evaluate on ``split`` after every ``every_epochs`` epochs, after the last, and (``at_start``) before the first.

    ``on_record`` is called with each new record (e.g. to save results as they come).
    """

    def __init__(
        self,
        split: Split = "test",
        every_epochs: int = 5,
        *,
        at_start: bool = False,
        on_record: Callable[[HeldOutRecord], None] | None = None,
    ) -> None:
        if every_epochs < 1:
            raise ValueError(f"every_epochs must be at least 1, got {every_epochs}")
        self.split, self.every_epochs, self.at_start, self.on_record = split, every_epochs, at_start, on_record
        self.records: list[HeldOutRecord] = []
        self._minutes_before = 0.0  # training minutes of the epochs before a resume
        self._clock_start = 0.0

    def _minutes(self) -> float:
        return self._minutes_before + (time.perf_counter() - self._clock_start) / 60.0

    def evaluate(self, context: TrainingContext) -> DatasetEvaluation:
        """Score the run's current model (EMA if any) on the held-out split, as ``evaluate --data`` does."""
        config = context.config
        fill = NORMALIZATION_FILL[config.data.augment.normalization][0] / 255.0
        model = context.eval_model
        loaded = LoadedModel(
            model, list(context.head_specs), context.class_names, (config.data.image_size,) * 2,
            Preprocessing(letterbox=True, fill=fill), f"{config.model.name} being trained in {context.run_dir}",
            config.data.augment.normalization,
        )  # fmt: skip
        settings = DatasetEvaluationSettings(split=self.split, device=str(context.device))
        was_training = model.training
        try:
            return evaluate_on_dataset(loaded, data_source_from_config(config), settings)
        finally:
            model.train(was_training)

    def _record(self, context: TrainingContext, epoch: int, val_map50: float | None) -> None:
        minutes = self._minutes() if epoch > context.start_epoch else self._minutes_before  # the clock stops ...
        started = time.perf_counter()
        evaluation = self.evaluate(context)
        seconds = time.perf_counter() - started
        self._clock_start += seconds  # ... and restarts after the evaluation
        record = record_from_evaluation(evaluation, epoch, minutes, val_map50, seconds)
        self.records.append(record)
        logger.info(
            "%s after %d epochs (%.2f training minutes): mAP@0.5 %.4f, mAP@[.5:.95] %.4f",
            self.split, epoch, minutes, record.map50, record.map,
        )  # fmt: skip
        if self.on_record is not None:
            self.on_record(record)

    def on_fit_start(self, context: TrainingContext) -> None:
        self._clock_start = time.perf_counter()
        if self.at_start and context.start_epoch == 0 and not self.records and context.is_main:
            self._record(context, 0, None)  # at 0 minutes

    def on_epoch_end(self, context: TrainingContext, epoch: int, metrics: dict[str, float]) -> None:
        done = epoch + 1
        if context.is_main and (done % self.every_epochs == 0 or done == context.config.train.epochs):
            self._record(context, done, metrics.get("mAP50"))

    def state_dict(self) -> dict[str, Any]:
        return {"records": [record.to_dict() for record in self.records], "minutes": self._minutes()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.records = [HeldOutRecord.from_dict(entry) for entry in state.get("records", [])]
        self._minutes_before = float(state.get("minutes", 0.0))
