"""Deep Compression of a trained checkpoint as a library function: prune, fine-tune, share, fine-tune centroids,
Huffman-code, write one ``.yolov3c`` file.

:func:`compress_model` is what ``python -m yolov3.compress`` runs, callable with a :class:`CompressSettings`::

    settings = CompressSettings(load_train_config("args.yaml"), Path("best.pt"), Path("model.yolov3c"),
                                run_dir=Path("logs/compress"), sparsity=0.8, bits=4, finetune_epochs=10)
    result = compress_model(settings)
    print(result.report.format_table(), result.format_stages())

The config's data and validation settings score every stage (mAP@0.5, as the trainer validates) and its
trainer fine-tunes, in ``run_dir/finetune_pruned`` and ``run_dir/finetune_shared``. Pruning is global magnitude
pruning of all convs but the first and the heads' outputs, the masks held while fine-tuning; weight sharing
clusters every conv but ``share_skip`` into ``2 ** bits`` centroids, which the centroid fine-tuning trains.

A stopped run resumes with ``resume=True`` and the same settings (kept in ``run_dir/compress.json``): the steps
before each fine-tuning are deterministic and run again; a fine-tuning run continues from its ``last.pt`` (a
finished one is only read back), so the file written equals an uninterrupted run's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from torch import nn

from yolov3.checkpoint import Checkpoint, load_checkpoint, model_from_checkpoint
from yolov3.compression.masks import (
    finalize_pruning,
    prunable_layers,
    prune_to_sparsity,
    pruning_masks,
    sparsity_report,
)
from yolov3.compression.pipelines import (
    PipelineStage,
    StartFrom,
    check_model_spec,
    finetune,
    record_settings,
    settings_record,
)
from yolov3.compression.report import CompressionReport
from yolov3.compression.sharing import WeightSharingCallback, detach_sharing, share_weights
from yolov3.compression.storage import CompressedModel, load_compressed, round_to_float16, write_compressed
from yolov3.evaluation.validate import validate_with
from yolov3.train.builder import validation_data
from yolov3.train.callbacks import TrainerCallback
from yolov3.train.config import TrainConfig
from yolov3.train.distributed import resolve_device
from yolov3.train.tensorboard import TrainingBoard

logger = logging.getLogger(__name__)
METADATA_KEYS = ("class_names", "input_size", "preprocessing", "normalization")
PRUNE_SKIP = ("first", "heads")  # convs pruning leaves dense


@dataclass(frozen=True)
class CompressSettings:
    """What to compress (``weights``, trained with ``config``), into which file (``out``), and how.

    ``finetune_lr`` defaults to the config's learning rate / 10, ``centroid_epochs`` to ``finetune_epochs`` and
    ``centroid_lr`` to ``finetune_lr``; ``share_skip`` lists the convs left unshared (``first``, ``heads``, name
    patterns). ``callbacks`` ride along both fine-tunings (e.g. an
    :class:`~yolov3.train.interrupt.InterruptHandler`).
    """

    config: TrainConfig
    weights: Path
    out: Path
    run_dir: Path
    sparsity: float = 0.8
    bits: int = 4
    finetune_epochs: int = 0
    centroid_epochs: int | None = None
    finetune_lr: float | None = None
    centroid_lr: float | None = None
    share_skip: tuple[str, ...] = ("first", "heads")
    position_bits: int = 4
    float_format: Literal["float16", "float32"] = "float16"
    progress: bool = True
    resume: bool = False
    callbacks: tuple[TrainerCallback, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.sparsity < 1.0 or not 1 <= self.bits <= 8:
            raise ValueError(f"sparsity must be in [0, 1) and bits in 1..8, got {self.sparsity} and {self.bits}")
        if self.finetune_epochs < 0 or (self.centroid_epochs or 0) < 0:
            raise ValueError(f"epochs must be >= 0, got {self.finetune_epochs} and {self.centroid_epochs}")


@dataclass
class CompressResult:
    out: Path
    report: CompressionReport  # per-layer sizes of the file
    stages: list[PipelineStage]

    def format_stages(self) -> str:
        lines = ["| stage | sparsity (pruned convs) | mAP@0.5 |", "| --- | ---: | ---: |"]
        lines += [f"| {row.stage} | {row.sparsity:.2%} | {row.map50:.4f} |" for row in self.stages]
        return "\n".join(lines)


def _sparsity(model: nn.Module) -> float:
    return sparsity_report(model, prunable_layers(model, PRUNE_SKIP)).sparsity


def compress_model(settings: CompressSettings) -> CompressResult:
    """Run Deep Compression as ``settings`` say; write ``settings.out`` and TensorBoard logs in ``run_dir``."""
    config, run_dir, progress = settings.config, settings.run_dir, settings.progress
    run_dir.mkdir(parents=True, exist_ok=True)
    recorded = settings_record(settings, ("progress", "resume", "callbacks", "run_dir"))
    record_settings(run_dir / "compress.json", recorded, settings.resume)
    checkpoint = load_checkpoint(settings.weights)
    model_spec = check_model_spec(settings.weights, checkpoint, config)
    model = model_from_checkpoint(checkpoint)
    finalize_pruning(model)
    board = TrainingBoard(run_dir)
    device = resolve_device(config.device)
    validation = validation_data(config, progress=progress)
    stages: list[PipelineStage] = []

    def record(stage: str, current: nn.Module) -> None:
        map50 = validate_with(current.to(device), validation, config.eval, device=device, progress=progress).map50
        stages.append(PipelineStage(stage, _sparsity(current), map50))
        board.scalars({"mAP50": map50, "sparsity": stages[-1].sparsity}, len(stages) - 1, prefix="compress/")
        logger.info("%s: sparsity %.2f%%, mAP@0.5 %.4f", stage, 100 * stages[-1].sparsity, map50)

    record("dense", model)
    finetune_lr = settings.finetune_lr or config.optimizer.learning_rate / 10
    if settings.sparsity > 0:
        prune_to_sparsity(model, settings.sparsity, "global", prunable_layers(model, PRUNE_SKIP))
        masks = pruning_masks(model)
        finalize_pruning(model)
        record("pruned", model)
        if settings.finetune_epochs:
            callbacks = [*settings.callbacks, StartFrom(model.state_dict(), masks)]
            model = finetune(config, settings.finetune_epochs, finetune_lr, run_dir / "finetune_pruned", callbacks,
                             progress, settings.resume).eval_model  # fmt: skip
            finalize_pruning(model)
            record("pruned, fine-tuned", model)
    shared = share_weights(model, settings.bits, layers=prunable_layers(model, settings.share_skip))
    record(f"shared (k={2**settings.bits})", model)
    centroid_epochs = settings.finetune_epochs if settings.centroid_epochs is None else settings.centroid_epochs
    if centroid_epochs:
        callbacks = [*settings.callbacks, StartFrom(model.state_dict()), WeightSharingCallback(shared)]
        model = finetune(config, centroid_epochs, settings.centroid_lr or finetune_lr, run_dir / "finetune_shared",
                         callbacks, progress, settings.resume).eval_model  # fmt: skip
        shared = detach_sharing(model)
        record("shared, centroids fine-tuned", model)
    if settings.float_format == "float16":
        round_to_float16(model, shared)
    metadata = {key: getattr(checkpoint, key) for key in METADATA_KEYS if getattr(checkpoint, key) is not None}
    report = write_compressed(settings.out, model, shared, model_spec=model_spec.to_dict(), metadata=metadata,
                              position_bits=settings.position_bits, float_format=settings.float_format)  # fmt: skip
    record(f"file ({settings.float_format}, decoded)", load_compressed(settings.out).model)
    result = CompressResult(settings.out, report, stages)
    if board.writer is not None:
        board.writer.add_text("compress/layers", report.format_table())
        board.writer.add_text("compress/stages", result.format_stages())
    board.close()
    return result


def decoded_checkpoint(stored: CompressedModel, source: str = "compressed file") -> Checkpoint:
    """A plain checkpoint of a decoded ``.yolov3c`` model, with the metadata its file kept."""
    entries = {key: stored.metadata[key] for key in METADATA_KEYS if key in stored.metadata}
    entries |= {"model": stored.model_spec, "model_state": stored.model.state_dict()}
    return Checkpoint.from_dict(entries, source)
