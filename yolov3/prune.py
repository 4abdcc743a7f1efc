"""``python -m yolov3.prune {oneshot,iterative,lottery,sensitivity}``: unstructured magnitude pruning.

Examples::

    # prune a trained model to 80% sparsity (global magnitude), fine-tune 5 epochs, save a plain checkpoint
    python -m yolov3.prune oneshot --weights best.pt --cfg configs/shapes.yaml --target 0.8 --finetune-epochs 5
    # the same in 4 rounds of prune + 2 epochs of fine-tuning
    python -m yolov3.prune iterative --weights best.pt --cfg configs/shapes.yaml --target 0.8 --rounds 4 \\
        --finetune-epochs 2
    # lottery tickets: 5 rounds of 20%, rewinding to step 100 of the dense run, with the random-reinit control
    python -m yolov3.prune lottery --cfg configs/shapes.yaml --rounds 5 --rate 0.2 --rewind iteration:100 \\
        --control random_reinit
    # per-layer sensitivity (loss proxy), and a per-layer budget for 80% overall; then prune with it
    python -m yolov3.prune sensitivity --weights best.pt --cfg configs/shapes.yaml --target 0.8
    python -m yolov3.prune oneshot --weights best.pt --cfg configs/shapes.yaml --budget <out>/budget.yaml

Sparsities count the prunable convs (all but the first conv and the heads' output convs, unless ``--skip``
says otherwise). Every command writes its tables (markdown + CSV) and TensorBoard scalars into ``--out``
(default ``<logging.log_dir>/<run name>-<command>``). ``oneshot``/``iterative`` also write ``pruned.pt``:
the fine-tuned model with its zeros made permanent, a plain checkpoint (``detect``, ``export``, Darknet
``.weights``). Unstructured zeros shrink a sparse or entropy-coded file, not dense inference time.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import logging
import sys
import time
from pathlib import Path

from torch import nn

from yolov3.atomic import write_text_atomic
from yolov3.compression.lottery import RewindPoint, run_lottery
from yolov3.compression.masks import DEFAULT_SKIP, finalize_pruning, prunable_layers, sparsity_report
from yolov3.compression.pruning_callback import GradualPruningCallback
from yolov3.compression.schedules import PruningConfig
from yolov3.compression.sensitivity import (
    DEFAULT_LEVELS,
    load_sparsity_budget,
    loss_proxy,
    measure_sensitivity,
    plot_sensitivity,
    sensitivity_budget,
    write_budget,
)
from yolov3.compression.structured import flops, prune_channels
from yolov3.config_loading import ConfigError
from yolov3.data.dataset_config import build_dataset
from yolov3.data.loader import build_val_loader
from yolov3.evaluation.dataset_gt import coco_ground_truth
from yolov3.loss.yolo_loss import YoloLoss
from yolov3.train.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_model_state,
    model_from_checkpoint,
    save_checkpoint,
)
from yolov3.train.config import TrainConfig, load_train_config
from yolov3.train.distributed import resolve_device
from yolov3.train.tensorboard import TrainingBoard
from yolov3.train.trainer import Trainer
from yolov3.train.validate import validate

logger = logging.getLogger("yolov3.prune")
TRAINING_ONLY_KEYS = ("optimizer", "scheduler", "runner", "callbacks", "rng")


def _common(parser: argparse.ArgumentParser, weights: bool) -> None:
    parser.add_argument("--cfg", type=Path, required=True, help="training config YAML (data, model, fine-tuning)")
    if weights:
        parser.add_argument("--weights", type=Path, required=True, help="trained checkpoint (best.pt)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a training config value (repeatable)")  # fmt: skip
    parser.add_argument("--skip", nargs="+", default=list(DEFAULT_SKIP), metavar="PATTERN",
                        help="convs left dense: first, heads, fnmatch name patterns (default first heads)")  # fmt: skip
    parser.add_argument("--out", type=Path, help="output folder (default <log_dir>/<run name>-<command>)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m yolov3.prune", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (("oneshot", "prune once, then fine-tune"), ("iterative", "rounds of prune + fine-tune")):
        sub = commands.add_parser(name, help=text, description=text)
        _common(sub, weights=True)
        sub.add_argument("--target", type=float, default=0.8, help="sparsity of the prunable convs (default 0.8)")
        sub.add_argument("--scope", choices=("global", "layer"), default="global", help="magnitude ranking scope")
        sub.add_argument("--finetune-epochs", type=int, default=1, help="epochs of fine-tuning (per round)")
        sub.add_argument("--budget", type=Path, help="per-layer sparsities (YAML from the sensitivity command)")
        if name == "iterative":
            sub.add_argument("--rounds", type=int, default=3, help="pruning rounds (default 3)")
            sub.add_argument("--rate", type=float, help="fraction of the remaining weights per round "
                             "(default: what reaches --target after --rounds)")  # fmt: skip
    lottery = commands.add_parser("lottery", help="lottery tickets: iterative pruning with rewinding")
    _common(lottery, weights=False)
    lottery.add_argument("--rounds", type=int, default=3, help="pruning rounds after the dense run (default 3)")
    lottery.add_argument("--rate", type=float, default=0.2, help="fraction of the remaining weights per round")
    lottery.add_argument("--rewind", default="init", help="init or iteration:K (default init)")
    lottery.add_argument("--control", choices=("random_reinit",), help="also train the masks from a random init")
    sensitivity = commands.add_parser("sensitivity", help="per-layer sensitivity table, plot and budget")
    _common(sensitivity, weights=True)
    sensitivity.add_argument("--metric", choices=("loss", "map"), default="loss", help="loss proxy (fast) or mAP")
    sensitivity.add_argument("--levels", type=float, nargs="+", default=list(DEFAULT_LEVELS), metavar="FRACTION")
    sensitivity.add_argument("--target", type=float, default=0.8, help="overall sparsity of the budget")
    sensitivity.add_argument("--tolerance", type=float, help="allowed degradation per layer "
                             "(mAP: absolute drop, default 0.01; loss: relative increase, default 0.05)")  # fmt: skip
    sensitivity.add_argument("--max-sparsity", type=float, default=0.95, help="cap on any layer's budget")
    sensitivity.add_argument("--max-batches", type=int, help="measure on the first N validation batches")
    structured = commands.add_parser("structured", help="remove whole channels: a smaller dense Darknet network")
    _common(structured, weights=True)
    structured.add_argument("--flops-target", type=float, default=0.5, help="fraction of the FLOPs kept (0.5)")
    structured.add_argument("--criterion", choices=("l1", "bn_gamma"), default="l1", help="channel importance")
    structured.add_argument("--finetune-epochs", type=int, default=0, help="fine-tune the pruned cfg model")
    return parser.parse_args(argv)


def output_dir(args: argparse.Namespace, config: TrainConfig) -> Path:
    if args.out is not None:
        return args.out
    name = config.logging.run_name or f"{args.cfg.stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    return config.logging.log_dir / f"{name}-{args.command}"


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(value) for value in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# -- oneshot / iterative ----------------------------------------------------------------------------------------


def _evaluate(trainer: Trainer) -> float:
    """mAP@0.5 of the model the trainer validates (its EMA when it has one) on the validation set."""
    model = trainer.ema.module if trainer.ema is not None else trainer.raw_model
    evaluation = trainer.config.eval
    return validate(
        model, trainer.val_batches, trainer.head_specs, trainer.ground_truth,
        conf_threshold=evaluation.conf_threshold, iou_threshold=evaluation.iou_threshold,
        max_detections=evaluation.max_detections, metric=evaluation.metric, device=trainer.device, progress=False,
    ).map50  # fmt: skip


def prune_and_finetune(args: argparse.Namespace) -> int:
    config = load_train_config(args.cfg, args.overrides)
    iterative = args.command == "iterative"
    pruning = PruningConfig(
        method="iterative" if iterative else "one_shot", target_sparsity=args.target, scope=args.scope,
        rate=getattr(args, "rate", None), rounds=getattr(args, "rounds", 1), skip=tuple(args.skip),
        finetune_epochs=args.finetune_epochs,
        layer_sparsity=load_sparsity_budget(args.budget) if args.budget else {},
    )  # fmt: skip
    epochs = pruning.rounds * pruning.finetune_epochs if iterative else pruning.finetune_epochs
    if iterative and pruning.finetune_epochs < 1:
        raise ValueError("iterative pruning needs --finetune-epochs >= 1 (the epochs of each round)")
    every = pruning.finetune_epochs if iterative else config.eval.every_epochs
    config = dataclasses.replace(
        config,
        train=dataclasses.replace(config.train, epochs=max(1, epochs)),
        eval=dataclasses.replace(config.eval, every_epochs=every),
    )
    out = output_dir(args, config)
    checkpoint = load_checkpoint(args.weights)
    callback = GradualPruningCallback(pruning)
    trainer = Trainer(config, out, progress=not args.no_progress, callbacks=[callback])
    if checkpoint["model"] != trainer.model_spec:
        raise ValueError(
            f"{args.weights}: is a {checkpoint['model']} model, but the config builds {trainer.model_spec}"
        )
    state = checkpoint.get("ema_state") or checkpoint["model_state"]
    load_model_state(trainer.raw_model, state)
    if trainer.ema is not None:
        load_model_state(trainer.ema.module, state)
    layers = prunable_layers(trainer.raw_model, pruning.skip)
    header = ["stage", "sparsity", "mAP@0.5"]
    rows = [["dense", f"{sparsity_report(trainer.raw_model, layers).sparsity:.4f}", f"{_evaluate(trainer):.4f}"]]
    if not iterative:
        callback.prune_to(trainer, pruning.target_sparsity, 0)
        rows.append(["pruned, before fine-tuning", f"{callback.sparsity:.4f}", f"{_evaluate(trainer):.4f}"])
    if epochs > 0:
        trainer.fit()
    for entry in trainer.history:
        if "mAP50" in entry and (iterative or entry["epoch"] == len(trainer.history)):
            stage = f"round {entry['epoch'] // max(1, pruning.finetune_epochs)}" if iterative else "fine-tuned"
            rows.append(
                [f"{stage} ({entry['epoch']} epochs)", f"{entry['prune/sparsity']:.4f}", f"{entry['mAP50']:.4f}"]
            )
    board = TrainingBoard(out)
    for step, row in enumerate(rows):
        board.scalars({"sparsity": float(row[1]), "mAP50": float(row[2])}, step, prefix="prune/")
    board.close()
    write_text_atomic(out / "prune.md", markdown_table(header, rows))
    write_text_atomic(out / "prune.csv", "\n".join(",".join(map(str, row)) for row in [header, *rows]) + "\n")
    report = sparsity_report(trainer.raw_model)
    _save_finalized(trainer, out / "pruned.pt", pruning)
    print(markdown_table(header, rows))
    print(report.format_table())
    print(f"\npruned checkpoint (zeros permanent): {out / 'pruned.pt'}\nTensorBoard: tensorboard --logdir {out}")
    return 0


def _save_finalized(trainer: Trainer, path: Path, pruning: PruningConfig) -> None:
    """Make the masks permanent in the model and its EMA, and save them as a plain (inference) checkpoint."""
    sparsity = sparsity_report(trainer.raw_model, prunable_layers(trainer.raw_model, pruning.skip)).sparsity
    finalize_pruning(trainer.raw_model)
    if trainer.ema is not None:
        finalize_pruning(trainer.ema.module)
    checkpoint = trainer.checkpoint(max(0, len(trainer.history) - 1))
    for key in TRAINING_ONLY_KEYS:
        checkpoint.pop(key, None)
    checkpoint["pruning"] = {"method": pruning.method, "sparsity": sparsity, "scope": pruning.scope}
    save_checkpoint(path, checkpoint)


# -- lottery and sensitivity ------------------------------------------------------------------------------------


def lottery(args: argparse.Namespace) -> int:
    config = load_train_config(args.cfg, args.overrides)
    out = output_dir(args, config)
    result = run_lottery(
        config, out, args.rounds, args.rate, RewindPoint.parse(args.rewind), control=args.control is not None,
        skip=tuple(args.skip), progress=not args.no_progress,
    )  # fmt: skip
    print(result.format_markdown())
    print(f"tables: {out / 'lottery.md'}, {out / 'lottery.csv'}\nTensorBoard: tensorboard --logdir {out}")
    return 0


def sensitivity(args: argparse.Namespace) -> int:
    config = load_train_config(args.cfg, args.overrides)
    out = args.out or args.weights.parent / "sensitivity"
    device = resolve_device(config.device)
    model = model_from_checkpoint(load_checkpoint(args.weights)).to(device)  # plain: a pruned one's zeros baked in
    data = config.data
    dataset = build_dataset(data.dataset, "val", for_evaluation=True, progress=not args.no_progress)
    loader = build_val_loader(dataset, data.augment, data.batch_size, data.workers, data.image_size)
    batches = list(itertools.islice(loader, args.max_batches))
    head_specs = model.head_specs
    if args.metric == "loss":
        criterion = YoloLoss(head_specs, config.loss)

        def evaluate(candidate: nn.Module) -> float:
            return loss_proxy(candidate, batches, criterion, device)
    else:
        ground_truth = coco_ground_truth(dataset)
        kept = {image_id for batch in batches for image_id in batch.image_ids}
        ground_truth["images"] = [image for image in ground_truth["images"] if image["id"] in kept]
        ground_truth["annotations"] = [a for a in ground_truth["annotations"] if a["image_id"] in kept]

        def evaluate(candidate: nn.Module) -> float:
            evaluation = config.eval
            return validate(candidate, batches, head_specs, ground_truth, conf_threshold=evaluation.conf_threshold,
                            iou_threshold=evaluation.iou_threshold, max_detections=evaluation.max_detections,
                            device=device, progress=False).map50  # fmt: skip

    metric = "loss" if args.metric == "loss" else "map50"
    layers = prunable_layers(model, args.skip)
    result = measure_sensitivity(model, evaluate, layers, args.levels, metric, progress=not args.no_progress)
    tolerance = args.tolerance if args.tolerance is not None else (0.05 if metric == "loss" else 0.01)
    budget = sensitivity_budget(result, args.target, tolerance, args.max_sparsity)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "sensitivity.md", result.format_markdown())
    write_text_atomic(out / "sensitivity.csv", result.format_csv())
    plot_sensitivity(result, out / "sensitivity.png")
    kind = "relative loss increase" if metric == "loss" else "absolute mAP@0.5 drop"
    note = (
        f"Per-layer sparsity budget from {args.weights} for {args.target:.2%} overall over the prunable convs.\n"
        f"Rule: each layer's tolerance is the largest level within a {kind} of {tolerance:g} (at least\n"
        f"{result.levels[0]:g}); budgets are the tolerances times one scale that meets the target, capped at\n"
        f"{args.max_sparsity:g}. Use: python -m yolov3.prune oneshot --budget <this file> ..."
    )
    write_budget(out / "budget.yaml", budget, args.target, note)
    print(result.format_markdown())
    print(markdown_table(["layer", "budget"], [[name, f"{value:.4f}"] for name, value in budget.items()]))
    print(f"written: {out / 'sensitivity.md'}, sensitivity.csv, sensitivity.png, budget.yaml")
    return 0


def structured_prune(args: argparse.Namespace) -> int:
    """Prune channels of a trained checkpoint, save the result as Darknet cfg + weights, optionally fine-tune."""
    config = load_train_config(args.cfg, args.overrides)
    out = output_dir(args, config)
    out.mkdir(parents=True, exist_ok=True)
    model = model_from_checkpoint(load_checkpoint(args.weights)).eval()
    size = (config.data.image_size, config.data.image_size)
    pruned = prune_channels(model, flops_target=args.flops_target, criterion=args.criterion)
    cfg_path, weights_path = out / "pruned.cfg", out / "pruned.weights"
    pruned.save_darknet_cfg(cfg_path, header=f"{args.weights} pruned to {args.flops_target:.0%} of its FLOPs")
    pruned.save_darknet_weights(weights_path)
    header = ["model", "BFLOPs", "parameters", "mAP@0.5"]
    rows = [
        [name, f"{flops(network, size):.3f}", f"{sum(p.numel() for p in network.parameters()):,}", "-"]
        for name, network in (("dense", model), ("pruned", pruned))
    ]
    if args.finetune_epochs > 0:
        options = {"cfg": str(cfg_path), "weights": str(weights_path)}
        config = dataclasses.replace(
            config,
            model=dataclasses.replace(config.model, name="darknet_cfg", options=options, backbone_weights=None),
            train=dataclasses.replace(config.train, epochs=args.finetune_epochs),
        )
        trainer = Trainer(config, out / "finetune", progress=not args.no_progress)
        result = trainer.fit()
        trainer.raw_model.save_darknet_weights(out / "finetuned.weights")
        rows[1][3] = f"{result.last_map50:.4f}" if result.last_map50 is not None else "-"
    write_text_atomic(out / "structured.md", markdown_table(header, rows))
    print(markdown_table(header, rows))
    print(f"written: {cfg_path}, {weights_path}" + (", finetune/" if args.finetune_epochs > 0 else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    commands = {
        "oneshot": prune_and_finetune,
        "iterative": prune_and_finetune,
        "lottery": lottery,
        "structured": structured_prune,
    }
    try:
        return commands.get(args.command, sensitivity)(args)
    except (ConfigError, CheckpointError, ValueError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
