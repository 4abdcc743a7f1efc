"""``python -m yolov3.compress``: Deep Compression of a trained detector, and back.

Compress (prune, fine-tune, share weights, fine-tune centroids, Huffman-code, write one file)::

    python -m yolov3.compress --weights best.pt --cfg train.yaml --sparsity 0.8 --bits 4 \\
        --finetune-epochs 10 --out model.yolov3c

``--cfg`` is the training config of the checkpoint (``logs/<run>/args.yaml``): its data and validation
settings score every stage (mAP@0.5, the trainer's validation) and its trainer fine-tunes. Pruning is
global magnitude pruning of all convs but the first and the heads' outputs, the masks held while
fine-tuning; weight sharing clusters every conv but the first and the detection heads' output convs
(``--share-skip``; those stay dense, in float16) into ``2 ** bits``
centroids, which the centroid fine-tuning trains (summed gradients). The per-layer size table, the stages'
sparsity and mAP are printed and logged to TensorBoard under ``--run-dir``.

A killed run resumes: run the same command with ``--run-dir RUN_DIR --resume`` (``RUN_DIR`` is printed at
the start; the arguments are kept in ``RUN_DIR/compress.json`` and must be the same). The steps before each
fine-tuning are deterministic and run again; a fine-tuning run continues from its ``last.pt`` (a finished one
just reads it back), exactly as ``python -m yolov3.train --resume`` does, so the file written equals an
uninterrupted run's. Ctrl-C or SIGTERM stop at the next optimizer step and say how to resume.

Decode back to a plain checkpoint or Darknet weights, or print a file's size report::

    python -m yolov3.compress decode model.yolov3c --out best.pt [--darknet model.weights]
    python -m yolov3.compress inspect model.yolov3c
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from yolov3.atomic import write_text_atomic
from yolov3.compression.masks import (
    apply_masks,
    finalize_pruning,
    prunable_layers,
    prune_to_sparsity,
    pruning_masks,
    sparsity_report,
)
from yolov3.compression.report import report_from_header
from yolov3.compression.sharing import WeightSharingCallback, detach_sharing, share_weights
from yolov3.compression.storage import (
    CompressedFileError,
    load_compressed,
    read_header,
    round_to_float16,
    write_compressed,
)
from yolov3.config_loading import ConfigError
from yolov3.data.dataset_config import build_dataset
from yolov3.data.loader import build_val_loader
from yolov3.evaluation.dataset_gt import coco_ground_truth
from yolov3.train.callbacks import TrainerCallback
from yolov3.train.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint, save_checkpoint
from yolov3.train.config import TrainConfig, load_train_config
from yolov3.train.distributed import resolve_device
from yolov3.train.interrupt import InterruptHandler, TrainingInterruptedError
from yolov3.train.tensorboard import TrainingBoard
from yolov3.train.trainer import Trainer
from yolov3.train.validate import validate

logger = logging.getLogger("yolov3.compress")
METADATA_KEYS = ("class_names", "input_size", "preprocessing", "normalization")
ARGUMENTS_FILE = "compress.json"  # in --run-dir: what --resume checks its arguments against
NOT_COMPARED_ON_RESUME = ("resume", "no_progress", "run_dir")


def parse_compress_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m yolov3.compress", description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, required=True, help="trained checkpoint (best.pt)")
    parser.add_argument("--cfg", type=Path, required=True, help="its training config (logs/<run>/args.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set data.batch_size=4 (repeatable)")  # fmt: skip
    parser.add_argument("--out", type=Path, required=True, help="compressed model file to write (.yolov3c)")
    parser.add_argument("--sparsity", type=float, default=0.8, help="global sparsity of the pruned convs (0: none)")
    parser.add_argument("--bits", type=int, default=4, help="bits per cluster index: k = 2**bits centroids")
    parser.add_argument("--finetune-epochs", type=int, default=0, help="epochs of fine-tuning after pruning")
    parser.add_argument("--centroid-epochs", type=int, help="epochs of centroid fine-tuning (default: as above)")
    parser.add_argument("--finetune-lr", type=float, help="fine-tuning learning rate (default: config's / 10)")
    parser.add_argument("--centroid-lr", type=float, help="centroid learning rate (default: --finetune-lr)")
    parser.add_argument("--share-skip", default="first,heads", help="convs left unshared: comma list of first, heads "
                        "and name patterns, or 'none'")  # fmt: skip
    parser.add_argument("--position-bits", type=int, default=4, help="bits of a relative position (with fillers)")
    parser.add_argument("--float-format", choices=("float16", "float32"), default="float16",
                        help="precision of codebooks, biases and batch norm (float16 rounds them first)")  # fmt: skip
    parser.add_argument("--run-dir", type=Path, help="TensorBoard / fine-tuning folder (default: under log_dir)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--resume", action="store_true", help="continue the killed run in --run-dir (same arguments)")
    arguments = parser.parse_args(argv)
    if arguments.resume and arguments.run_dir is None:
        parser.error("--resume needs --run-dir: the folder of the run to continue")
    if not 0.0 <= arguments.sparsity < 1.0 or not 1 <= arguments.bits <= 8:
        parser.error("--sparsity must be in [0, 1) and --bits in 1..8")
    if arguments.finetune_epochs < 0 or (arguments.centroid_epochs or 0) < 0:
        parser.error("epochs must be >= 0")
    return arguments


class _StartFrom(TrainerCallback):
    """Loads a state into the trainer's model and its EMA at fit start, and holds pruning masks on both."""

    def __init__(self, state: dict[str, torch.Tensor], masks: dict[str, torch.Tensor] | None = None) -> None:
        self.state, self.masks = state, masks or {}

    def on_fit_start(self, trainer: Trainer) -> None:
        if trainer.start_epoch > 0:
            return  # resumed: last.pt held the model, its EMA and their masks
        for model in (trainer.raw_model, trainer.ema.module if trainer.ema is not None else None):
            if model is not None:
                model.load_state_dict(self.state)
                if self.masks:
                    apply_masks(model, self.masks)


class _Validation:
    """The config's validation set, scored as the trainer does."""

    def __init__(self, config: TrainConfig, device: torch.device, progress: bool) -> None:
        self.config, self.device, self.progress = config, device, progress
        data = config.data
        dataset = build_dataset(data.dataset, "val", for_evaluation=True, progress=progress)
        self.batches = build_val_loader(dataset, data.augment, data.batch_size, data.workers, data.image_size)
        self.ground_truth = coco_ground_truth(dataset)

    def map50(self, model: nn.Module) -> float:
        settings = self.config.eval
        result = validate(
            model.to(self.device), self.batches, model.head_specs, self.ground_truth,
            conf_threshold=settings.conf_threshold, iou_threshold=settings.iou_threshold,
            max_detections=settings.max_detections, metric=settings.metric, device=self.device,
            progress=self.progress,
        )  # fmt: skip
        return result.map50


def _finetune(
    config: TrainConfig,
    epochs: int,
    learning_rate: float,
    run_dir: Path,
    callbacks: list[TrainerCallback],
    progress: bool,
    resume: bool = False,
) -> nn.Module:
    """Train ``epochs`` with ``callbacks`` (no warm-up, nothing frozen); returns the EMA (or raw) model.

    With ``resume``, a ``last.pt`` in ``run_dir`` is continued (a finished run is only read back)."""
    config = dataclasses.replace(
        config,
        train=dataclasses.replace(config.train, epochs=epochs, freeze_backbone_epochs=0),
        optimizer=dataclasses.replace(config.optimizer, learning_rate=learning_rate),
        schedule=dataclasses.replace(config.schedule, warmup_steps=0),
    )
    resumed = resume and (run_dir / "last.pt").is_file()
    trainer = Trainer(config, run_dir, progress=progress, callbacks=callbacks, resume=resumed)
    if resumed and trainer.start_epoch >= epochs:
        logger.info("%s: fine-tuning finished before; its last.pt read back", run_dir)
    elif resumed:
        logger.info("%s: resuming fine-tuning at epoch %d of %d", run_dir, trainer.start_epoch + 1, epochs)
    trainer.fit()
    return trainer.ema.module if trainer.ema is not None else trainer.raw_model


def _skip_list(text: str) -> tuple[str, ...]:
    return () if text.strip().lower() == "none" else tuple(part.strip() for part in text.split(",") if part.strip())


def _sparsity(model: nn.Module, skip: tuple[str, ...]) -> float:
    return sparsity_report(model, prunable_layers(model, skip)).sparsity


def _check_model_spec(path: Path, checkpoint: dict[str, Any], config: TrainConfig) -> None:
    """The config must build the checkpoint's model (as the trainer will, to fine-tune it)."""
    stored = checkpoint["model"]
    if stored["name"] != config.model.name:
        raise ValueError(f"{path}: a {stored['name']} model, but the config trains {config.model.name}")
    num_classes = config.model.num_classes or len(checkpoint.get("class_names") or ()) or None
    expected = {"name": config.model.name, "kwargs": {"num_classes": num_classes, **config.model.options}}
    if num_classes is not None and stored != expected:
        raise ValueError(f"{path}: was trained as {stored}, but the config builds {expected}")


def _record_arguments(arguments: argparse.Namespace, run_dir: Path) -> None:
    """Keep the arguments in ``run_dir`` (a fresh run), or check that ``--resume`` was given the same ones."""
    path = run_dir / ARGUMENTS_FILE
    current = {key: str(value) if isinstance(value, Path) else value for key, value in vars(arguments).items()}
    current = {key: value for key, value in current.items() if key not in NOT_COMPARED_ON_RESUME}
    if not arguments.resume:
        write_text_atomic(path, json.dumps(current, indent=2) + "\n")
        return
    try:
        started = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path}: not found; --resume continues a compress run in the --run-dir it wrote") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not the JSON compress writes ({error})") from error
    changed = [key for key in sorted(set(started) | set(current)) if started.get(key) != current.get(key)]
    if changed:
        differences = "; ".join(f"{key}: {started.get(key)!r}, now {current.get(key)!r}" for key in changed)
        raise ValueError(f"{path}: the run was started with other arguments ({differences}); resume with the same ones")


def compress(arguments: argparse.Namespace) -> int:
    run_dir = arguments.run_dir or load_train_config(arguments.cfg, arguments.overrides).logging.log_dir / (
        f"compress-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    _record_arguments(arguments, run_dir)
    logger.info("run folder %s (continue a killed run with --run-dir %s --resume)", run_dir, run_dir)
    with InterruptHandler() as interrupt:
        try:
            return _compress(arguments, run_dir, interrupt)
        except TrainingInterruptedError as stop:
            print(f"{stop}: the fine-tuning under {run_dir} keeps its last completed epoch; continue with the same "
                  f"arguments and --run-dir {run_dir} --resume", file=sys.stderr)  # fmt: skip
            return 128 + stop.signal_number


def _compress(arguments: argparse.Namespace, run_dir: Path, interrupt: InterruptHandler) -> int:
    config = load_train_config(arguments.cfg, arguments.overrides)
    checkpoint = load_checkpoint(arguments.weights)
    model = model_from_checkpoint(checkpoint)
    finalize_pruning(model)
    _check_model_spec(arguments.weights, checkpoint, config)
    progress, resume = not arguments.no_progress, arguments.resume
    board = TrainingBoard(run_dir)
    validation = _Validation(config, resolve_device(config.device), progress)
    stages: list[tuple[str, float, float]] = []

    def record(stage: str, current: nn.Module) -> None:
        sparsity, map50 = _sparsity(current, ("first", "heads")), validation.map50(current)
        stages.append((stage, sparsity, map50))
        board.scalars({"mAP50": map50, "sparsity": sparsity}, len(stages) - 1, prefix="compress/")
        logger.info("%s: sparsity %.2f%%, mAP@0.5 %.4f", stage, 100 * sparsity, map50)

    record("dense", model)
    finetune_lr = arguments.finetune_lr or config.optimizer.learning_rate / 10
    if arguments.sparsity > 0:
        prune_to_sparsity(model, arguments.sparsity, "global", prunable_layers(model, ("first", "heads")))
        masks = pruning_masks(model)
        finalize_pruning(model)
        record("pruned", model)
        if arguments.finetune_epochs:
            callbacks = [interrupt, _StartFrom(model.state_dict(), masks)]
            model = _finetune(config, arguments.finetune_epochs, finetune_lr, run_dir / "finetune_pruned", callbacks,
                              progress, resume)  # fmt: skip
            finalize_pruning(model)
            record("pruned, fine-tuned", model)
    layers = prunable_layers(model, _skip_list(arguments.share_skip))
    shared = share_weights(model, arguments.bits, layers=layers)
    record(f"shared (k={2**arguments.bits})", model)
    centroid_epochs = arguments.finetune_epochs if arguments.centroid_epochs is None else arguments.centroid_epochs
    if centroid_epochs:
        callbacks = [interrupt, _StartFrom(model.state_dict()), WeightSharingCallback(shared)]
        model = _finetune(config, centroid_epochs, arguments.centroid_lr or finetune_lr, run_dir / "finetune_shared",
                          callbacks, progress, resume)  # fmt: skip
        shared = detach_sharing(model)
        record("shared, centroids fine-tuned", model)
    if arguments.float_format == "float16":
        round_to_float16(model, shared)
    metadata = {key: checkpoint[key] for key in METADATA_KEYS if checkpoint.get(key) is not None}
    report = write_compressed(arguments.out, model, shared, model_spec=checkpoint["model"], metadata=metadata,
                              position_bits=arguments.position_bits, float_format=arguments.float_format)  # fmt: skip
    record(f"file ({arguments.float_format}, decoded)", load_compressed(arguments.out).model)
    print(report.format_table())
    print()
    print(_stage_table(stages))
    print(f"wrote {arguments.out} ({report.file_bytes:,} bytes, {report.ratio:.1f}x smaller than fp32 .weights)")
    print(f"TensorBoard: tensorboard --logdir {run_dir}")
    if board.writer is not None:
        board.writer.add_text("compress/layers", report.format_table())
        board.writer.add_text("compress/stages", _stage_table(stages))
    board.close()
    return 0


def _stage_table(stages: list[tuple[str, float, float]]) -> str:
    lines = ["| stage | sparsity (pruned convs) | mAP@0.5 |", "| --- | ---: | ---: |"]
    lines += [f"| {stage} | {sparsity:.2%} | {map50:.4f} |" for stage, sparsity, map50 in stages]
    return "\n".join(lines)


def decode(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m yolov3.compress decode", description="compressed file -> plain")
    parser.add_argument("file", type=Path, help="compressed model file (.yolov3c)")
    parser.add_argument("--out", type=Path, help="checkpoint to write (loads with detect, evaluate, train)")
    parser.add_argument("--darknet", type=Path, help="Darknet .weights file to write")
    arguments = parser.parse_args(argv)
    if arguments.out is None and arguments.darknet is None:
        parser.error("give --out and/or --darknet")
    stored = load_compressed(arguments.file)
    if arguments.out is not None:
        checkpoint: dict[str, Any] = {"model": stored.model_spec, "model_state": stored.model.state_dict(),
                                      "ema_state": None}  # fmt: skip
        metadata = stored.metadata
        for key in METADATA_KEYS:
            if key in metadata:
                value = metadata[key]
                checkpoint[key] = tuple(value) if key in ("class_names", "input_size") else value
        save_checkpoint(arguments.out, checkpoint)
        print(f"wrote {arguments.out}")
    if arguments.darknet is not None:
        if not hasattr(stored.model, "save_darknet_weights"):
            raise ValueError(f"{arguments.file}: a {stored.model_spec['name']} model has no Darknet form")
        stored.model.save_darknet_weights(arguments.darknet)
        print(f"wrote {arguments.darknet}")
    return 0


def inspect(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m yolov3.compress inspect", description="print a size report")
    parser.add_argument("file", type=Path, help="compressed model file (.yolov3c)")
    arguments = parser.parse_args(argv)
    header, payload = read_header(arguments.file)
    size = arguments.file.stat().st_size
    print(f"{arguments.file}: {header['model']['name']} {header['model'].get('kwargs', {})}")
    print(report_from_header(header, size, size - len(payload)).format_table())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    commands = {"decode": decode, "inspect": inspect}
    try:
        if argv and argv[0] in commands:
            return commands[argv[0]](argv[1:])
        return compress(parse_compress_args(argv))
    except (ConfigError, CheckpointError, CompressedFileError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
