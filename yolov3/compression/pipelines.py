"""Pruning workflows as library functions: prune a trained checkpoint, fine-tune it, save a plain checkpoint.

:func:`prune_and_finetune` is what ``python -m yolov3.prune oneshot|iterative`` runs, callable from Python
with a :class:`PruneSettings` (a notebook needs no command line)::

    pruning = PruningConfig(method="one_shot", target_sparsity=0.8, finetune_epochs=5)
    result = prune_and_finetune(PruneSettings(load_train_config("args.yaml"), Path("best.pt"), Path("out"), pruning))
    print(result.format_markdown())  # dense, pruned and fine-tuned mAP@0.5; out/pruned.pt

The fine-tuning is a training run in ``out`` (``last.pt`` every epoch). A run stopped by a kill or a signal
continues with ``resume=True`` and the same settings (kept in ``out/prune.json``): the steps before the
fine-tuning (loading, the dense and pruned evaluations, one-shot pruning) are deterministic and run again, then
the fine-tuning continues from ``last.pt`` exactly as ``python -m yolov3.train --resume`` does, so the files
written equal an uninterrupted run's. The shared pieces of the compression workflows live here too: the
fine-tuning runs (:func:`finetune`, :class:`StartFrom` to begin them from given weights and masks,
:func:`check_model_spec`) and the settings record that refuses a resume with other settings.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from yolov3.atomic import remove_stale_temporaries, write_text_atomic
from yolov3.checkpoint import Checkpoint, ModelSpec, load_checkpoint, load_model_state, save_checkpoint
from yolov3.compression.masks import (
    SparsityReport,
    apply_masks,
    finalize_pruning,
    prunable_layers,
    sparsity_report,
)
from yolov3.compression.pruning_callback import GradualPruningCallback
from yolov3.compression.schedules import PruningConfig
from yolov3.config_loading import to_dict
from yolov3.evaluation.validate import validate_with
from yolov3.train.builder import build_trainer
from yolov3.train.callbacks import TrainerCallback, TrainingContext
from yolov3.train.config import TrainConfig, flatten_config
from yolov3.train.tensorboard import TrainingBoard
from yolov3.train.trainer import Trainer

logger = logging.getLogger(__name__)
# What a prune run writes into its folder (atomically): partial temporaries of these a kill left are removed.
PRUNE_FILES = ("prune.json", "last.pt", "best.pt", "prune.md", "prune.csv", "pruned.pt")


# -- shared by the workflows -----------------------------------------------------------------------------------


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(value) for value in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def record_settings(path: Path, settings: Mapping[str, Any], resume: bool) -> None:
    """Keep ``settings`` in ``path`` (JSON) for a fresh run; on ``resume``, refuse settings that differ from them.

    The error names each differing (dotted) key with the value the run was started with and the new one.
    """
    current = flatten_config(json.loads(json.dumps(dict(settings), default=str)))
    if not resume:
        write_text_atomic(path, json.dumps(current, indent=2) + "\n")
        return
    try:
        started = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path}: not found; resuming continues a run in the folder it wrote") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not the JSON of a run's settings ({error})") from error
    changed = [key for key in sorted(set(started) | set(current)) if started.get(key) != current.get(key)]
    if changed:
        differences = "; ".join(f"{key}: {started.get(key)!r}, now {current.get(key)!r}" for key in changed)
        raise ValueError(f"{path}: the run was started with other arguments ({differences}); resume with the same ones")


def settings_record(settings: Any, leave_out: Sequence[str]) -> dict[str, Any]:
    """A settings dataclass as the plain mapping :func:`record_settings` keeps, without ``leave_out`` fields."""
    names = [entry.name for entry in dataclasses.fields(settings) if entry.name not in leave_out]
    return {name: to_dict(getattr(settings, name)) for name in names}


def finetune(
    config: TrainConfig,
    epochs: int,
    learning_rate: float,
    run_dir: Path,
    callbacks: Sequence[TrainerCallback],
    progress: bool = True,
    resume: bool = False,
) -> Trainer:
    """Train ``epochs`` with ``callbacks`` (no warm-up, nothing frozen) in ``run_dir``; the finished trainer.

    With ``resume``, a ``last.pt`` in ``run_dir`` is continued (a finished run is only read back)."""
    config = dataclasses.replace(
        config,
        train=dataclasses.replace(config.train, epochs=epochs, freeze_backbone_epochs=0),
        optimizer=dataclasses.replace(config.optimizer, learning_rate=learning_rate),
        schedule=dataclasses.replace(config.schedule, warmup_steps=0),
    )
    resumed = resume and (run_dir / "last.pt").is_file()
    trainer = build_trainer(config, run_dir, progress=progress, callbacks=callbacks, resume=resumed)
    if resumed and trainer.start_epoch >= epochs:
        logger.info("%s: fine-tuning finished before; its last.pt read back", run_dir)
    elif resumed:
        logger.info("%s: resuming fine-tuning at epoch %d of %d", run_dir, trainer.start_epoch + 1, epochs)
    trainer.fit()
    return trainer


class StartFrom(TrainerCallback):
    """Loads ``state`` into the trained model and its EMA at fit start, and holds pruning ``masks`` on both."""

    def __init__(self, state: dict[str, torch.Tensor], masks: dict[str, torch.Tensor] | None = None) -> None:
        self.state, self.masks = state, masks or {}

    def on_fit_start(self, context: TrainingContext) -> None:
        if context.start_epoch > 0:
            return  # resumed: last.pt held the model, its EMA and their masks
        for model in (context.model, context.ema_model):
            if model is not None:
                model.load_state_dict(self.state)
                if self.masks:
                    apply_masks(model, self.masks)


def check_model_spec(path: Path, checkpoint: Checkpoint, config: TrainConfig) -> ModelSpec:
    """The config must build the checkpoint's model (as the trainer will, to fine-tune it); returns its spec."""
    stored = checkpoint.model
    if stored is None:
        raise ValueError(f"{path}: the checkpoint names no model")
    if stored.name != config.model.name:
        raise ValueError(f"{path}: a {stored.name} model, but the config trains {config.model.name}")
    num_classes = config.model.num_classes or len(checkpoint.class_names or ()) or None
    expected = {"name": config.model.name, "kwargs": {"num_classes": num_classes, **config.model.options}}
    if num_classes is not None and stored.to_dict() != expected:
        raise ValueError(f"{path}: was trained as {stored.to_dict()}, but the config builds {expected}")
    return stored


# -- prune and fine-tune ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PruneSettings:
    """One ``oneshot`` or ``iterative`` run: ``weights`` (a trained checkpoint of the model ``config`` builds)
    pruned as ``pruning`` says, fine-tuned with ``config`` into ``out``. ``callbacks`` ride along the fine-tuning
    (e.g. an :class:`~yolov3.train.interrupt.InterruptHandler`); ``resume`` continues a stopped run in ``out``."""

    config: TrainConfig
    weights: Path
    out: Path
    pruning: PruningConfig
    progress: bool = True
    resume: bool = False
    callbacks: tuple[TrainerCallback, ...] = field(default=(), compare=False)


@dataclass(frozen=True)
class PipelineStage:
    """One row of a pruning or compression run's summary: what was done, the sparsity then, mAP@0.5 on val."""

    stage: str
    sparsity: float  # of the pruned convs
    map50: float


@dataclass
class PruneResult:
    stages: list[PipelineStage]
    report: SparsityReport  # per layer, of the fine-tuned model
    pruned_path: Path  # the fine-tuned model with its zeros made permanent: a plain checkpoint

    HEADER = ("stage", "sparsity", "mAP@0.5")

    def rows(self) -> list[list[str]]:
        return [[stage.stage, f"{stage.sparsity:.4f}", f"{stage.map50:.4f}"] for stage in self.stages]

    def format_markdown(self) -> str:
        return markdown_table(self.HEADER, self.rows())

    def format_csv(self) -> str:
        return "\n".join(",".join(row) for row in [list(self.HEADER), *self.rows()]) + "\n"


def _map50(trainer: Trainer) -> float:
    """mAP@0.5 of the model the trainer validates (its EMA when it has one) on the validation set."""
    return validate_with(trainer.eval_model, trainer.val_data, trainer.config.eval, device=trainer.device).map50


def prune_and_finetune(settings: PruneSettings) -> PruneResult:
    """Prune ``settings.weights`` (one-shot, or in rounds), fine-tune, and write ``prune.md``, ``prune.csv`` and
    ``pruned.pt`` into ``settings.out``; the stages' sparsity and mAP@0.5 also go to TensorBoard there."""
    pruning, out = settings.pruning, settings.out
    if pruning.method not in ("one_shot", "iterative"):
        raise ValueError(f"prune_and_finetune runs the one_shot and iterative methods, got {pruning.method!r}")
    iterative = pruning.method == "iterative"
    if iterative and pruning.finetune_epochs < 1:
        raise ValueError("iterative pruning needs finetune_epochs >= 1 (the epochs of each round)")
    epochs = pruning.rounds * pruning.finetune_epochs if iterative else pruning.finetune_epochs
    config = settings.config
    every = pruning.finetune_epochs if iterative else config.eval.every_epochs
    config = dataclasses.replace(
        config,
        train=dataclasses.replace(config.train, epochs=max(1, epochs)),
        eval=dataclasses.replace(config.eval, every_epochs=every),
    )
    out.mkdir(parents=True, exist_ok=True)
    if remove_stale_temporaries(out, PRUNE_FILES):
        logger.info("%s: removed the partial files that killed writes left", out)
    recorded = settings_record(settings, ("progress", "resume", "callbacks", "out"))
    record_settings(out / "prune.json", recorded, settings.resume)
    checkpoint = load_checkpoint(settings.weights)
    callback = GradualPruningCallback(pruning)
    trainer = build_trainer(config, out, progress=settings.progress, callbacks=[*settings.callbacks, callback])
    stored = checkpoint.model.to_dict() if checkpoint.model is not None else None
    if stored != trainer.model_spec:
        raise ValueError(f"{settings.weights}: is a {stored} model, but the config builds {trainer.model_spec}")
    state = checkpoint.inference_state
    load_model_state(trainer.model, state)
    if trainer.eval_model is not trainer.model:  # the EMA starts from the same weights
        load_model_state(trainer.eval_model, state)
    layers = prunable_layers(trainer.model, pruning.skip)
    stages = [PipelineStage("dense", sparsity_report(trainer.model, layers).sparsity, _map50(trainer))]
    if not iterative:
        callback.prune_to(trainer.context, pruning.target_sparsity, 0)
        stages.append(PipelineStage("pruned, before fine-tuning", callback.sparsity, _map50(trainer)))
    if settings.resume and (out / "last.pt").is_file():
        trainer.resume()
    elif settings.resume:
        logger.warning("%s: no last.pt (stopped before its first epoch completed): fine-tuning from the start", out)
    if epochs > 0:
        trainer.fit()
    for entry in trainer.history:
        if "mAP50" in entry and (iterative or entry["epoch"] == len(trainer.history)):
            done = int(entry["epoch"])
            stage = f"round {done // max(1, pruning.finetune_epochs)}" if iterative else "fine-tuned"
            stages.append(PipelineStage(f"{stage} ({done} epochs)", entry["prune/sparsity"], entry["mAP50"]))
    result = PruneResult(stages, sparsity_report(trainer.model), out / "pruned.pt")
    board = TrainingBoard(out)
    for step, row in enumerate(stages):
        board.scalars({"sparsity": row.sparsity, "mAP50": row.map50}, step, prefix="prune/")
    board.close()
    write_text_atomic(out / "prune.md", result.format_markdown())
    write_text_atomic(out / "prune.csv", result.format_csv())
    save_finalized(trainer, result.pruned_path, pruning)
    return result


def save_finalized(trainer: Trainer, path: Path, pruning: PruningConfig) -> None:
    """Make the masks permanent in the trained model and its EMA, and save them as a plain (inference) checkpoint."""
    sparsity = sparsity_report(trainer.model, prunable_layers(trainer.model, pruning.skip)).sparsity
    finalize_pruning(trainer.model)
    if trainer.eval_model is not trainer.model:
        finalize_pruning(trainer.eval_model)
    checkpoint = trainer.checkpoint(max(0, len(trainer.history) - 1)).without_training_state()
    record = {"method": pruning.method, "sparsity": sparsity, "scope": pruning.scope}
    save_checkpoint(path, dataclasses.replace(checkpoint, pruning=record))
