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
    # per-layer and global sensitivity (loss proxy), and a per-layer budget for 80% overall; then prune with it
    python -m yolov3.prune sensitivity --weights best.pt --cfg configs/shapes.yaml --target 0.8
    python -m yolov3.prune oneshot --weights best.pt --cfg configs/shapes.yaml --budget <out>/budget.yaml
    # sensitivity on mAP@0.5, with the global curve also after 2 epochs of fine-tuning at each level
    python -m yolov3.prune sensitivity --weights best.pt --cfg configs/shapes.yaml --metric map --finetune-epochs 2

Sparsities count the prunable convs (all but the first conv and the heads' output convs, unless ``--skip``
says otherwise). Every command writes its tables (markdown + CSV) and TensorBoard scalars into ``--out``
(default ``<logging.log_dir>/<run name>-<command>``). ``oneshot``/``iterative`` also write ``pruned.pt``:
the fine-tuned model with its zeros made permanent, a plain checkpoint (``detect``, ``export``, Darknet
``.weights``). Unstructured zeros shrink a sparse or entropy-coded file, not dense inference time.

A killed ``oneshot`` / ``iterative`` run resumes: run the same command with ``--resume`` (``--out`` names the run
folder; the settings are kept in ``<out>/prune.json`` and must be the same). Ctrl-C or SIGTERM stop the
fine-tuning at the next optimizer step and say how to resume. The work is done by library functions
(:mod:`yolov3.compression.pipelines` and its siblings); this module only parses arguments.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from yolov3.cli.runner import command, configure_logging
from yolov3.compression.lottery import RewindPoint, run_lottery
from yolov3.compression.masks import DEFAULT_SKIP
from yolov3.compression.pipelines import PruneSettings, markdown_table, prune_and_finetune
from yolov3.compression.pipelines_sensitivity import FINETUNE_FOLDER, SensitivitySettings, sensitivity_analysis
from yolov3.compression.pipelines_structured import StructuredSettings, structured_prune
from yolov3.compression.schedules import PruningConfig
from yolov3.compression.sensitivity import DEFAULT_LEVELS, load_sparsity_budget
from yolov3.train.config import TrainConfig, load_train_config
from yolov3.train.interrupt import InterruptHandler, TrainingInterruptedError, report_interruption

logger = logging.getLogger("yolov3.prune")


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
        sub.add_argument("--resume", action="store_true", help="continue the killed run in --out (same arguments)")
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
    sensitivity = commands.add_parser("sensitivity", help="per-layer and global sensitivity table, plot and budget")
    _common(sensitivity, weights=True)
    sensitivity.add_argument("--metric", choices=("loss", "map"), default="loss", help="loss proxy (fast) or mAP")
    sensitivity.add_argument("--levels", type=float, nargs="+", default=list(DEFAULT_LEVELS), metavar="FRACTION")
    sensitivity.add_argument("--target", type=float, default=0.8, help="overall sparsity of the budget")
    sensitivity.add_argument("--tolerance", type=float, help="allowed degradation per layer "
                             "(mAP: absolute drop, default 0.01; loss: relative increase, default 0.05)")  # fmt: skip
    sensitivity.add_argument("--max-sparsity", type=float, default=0.95, help="cap on any layer's budget")
    sensitivity.add_argument("--max-batches", type=int, help="measure on the first N validation batches")
    sensitivity.add_argument("--finetune-epochs", type=int, default=0, help="also measure the global curve after N "
                             "epochs of fine-tuning at each level, masks held (default 0: not)")  # fmt: skip
    sensitivity.add_argument("--finetune-lr", type=float, help="learning rate of that fine-tuning "
                             "(default: the config's / 10)")  # fmt: skip
    structured = commands.add_parser("structured", help="remove whole channels: a smaller dense Darknet network")
    _common(structured, weights=True)
    structured.add_argument("--flops-target", type=float, default=0.5, help="fraction of the FLOPs kept (0.5)")
    structured.add_argument("--criterion", choices=("l1", "bn_gamma"), help="channel importance "
                            "(default: bn_gamma after --slimming-epochs, else l1)")  # fmt: skip
    structured.add_argument("--channel-multiple", type=int, default=1, help="keep a multiple of this many "
                            "channels per layer (16: onnxruntime's AVX-512 blocked layout; default 1)")  # fmt: skip
    structured.add_argument("--finetune-epochs", type=int, default=0, help="fine-tune the pruned cfg model")
    structured.add_argument("--slimming-epochs", type=int, default=0, help="first train the dense model N epochs "
                            "under network slimming's L1 penalty on the BN scales (default 0: not)")  # fmt: skip
    structured.add_argument("--slimming-strength", type=float, default=1e-3, help="that penalty's weight (1e-3)")
    structured.add_argument("--resume", action="store_true", help="continue the killed run in --out (same arguments)")
    arguments = parser.parse_args(argv)
    if getattr(arguments, "resume", False) and arguments.out is None:
        parser.error("--resume needs --out: the folder of the run to continue")
    return arguments


def output_dir(args: argparse.Namespace, config: TrainConfig) -> Path:
    if args.out is not None:
        return args.out
    name = config.logging.run_name or f"{args.cfg.stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    return config.logging.log_dir / f"{name}-{args.command}"


def oneshot_or_iterative(args: argparse.Namespace) -> int:
    config = load_train_config(args.cfg, args.overrides)
    iterative = args.command == "iterative"
    pruning = PruningConfig(
        method="iterative" if iterative else "one_shot", target_sparsity=args.target, scope=args.scope,
        rate=getattr(args, "rate", None), rounds=getattr(args, "rounds", 1), skip=tuple(args.skip),
        finetune_epochs=args.finetune_epochs,
        layer_sparsity=load_sparsity_budget(args.budget) if args.budget else {},
    )  # fmt: skip
    out = output_dir(args, config)
    with InterruptHandler() as interrupt:
        settings = PruneSettings(config, args.weights, out, pruning, progress=not args.no_progress,
                                 resume=args.resume, callbacks=(interrupt,))  # fmt: skip
        try:
            result = prune_and_finetune(settings)
        except TrainingInterruptedError as stop:
            return report_interruption(
                stop,
                f"{out / 'last.pt'} keeps the last completed epoch of the fine-tuning; "
                f"continue with the same arguments and --out {out} --resume",
            )
    print(result.format_markdown())
    print(result.report.format_table())
    print(f"\npruned checkpoint (zeros permanent): {result.pruned_path}\nTensorBoard: tensorboard --logdir {out}")
    return 0


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
    settings = SensitivitySettings(
        load_train_config(args.cfg, args.overrides), args.weights, args.out or args.weights.parent / "sensitivity",
        metric=args.metric, levels=tuple(args.levels), target=args.target, tolerance=args.tolerance,
        max_sparsity=args.max_sparsity, max_batches=args.max_batches, skip=tuple(args.skip),
        finetune_epochs=args.finetune_epochs, finetune_lr=args.finetune_lr, progress=not args.no_progress,
    )  # fmt: skip
    outcome = sensitivity_analysis(settings)
    print(outcome.result.format_markdown())
    print(markdown_table(["layer", "budget"], [[name, f"{value:.4f}"] for name, value in outcome.budget.items()]))
    finetuned = f", {FINETUNE_FOLDER}/ (the fine-tuning runs)" if args.finetune_epochs > 0 else ""
    print(f"written: {settings.out / 'sensitivity.md'}, sensitivity.csv, sensitivity.png, budget.yaml{finetuned}")
    return 0


def structured(args: argparse.Namespace) -> int:
    """Prune channels of a trained checkpoint, save the result as Darknet cfg + weights, optionally fine-tune."""
    config = load_train_config(args.cfg, args.overrides)
    settings = StructuredSettings(
        config, args.weights, output_dir(args, config), flops_target=args.flops_target, criterion=args.criterion,
        channel_multiple=args.channel_multiple, finetune_epochs=args.finetune_epochs,
        slimming_epochs=args.slimming_epochs, slimming_strength=args.slimming_strength,
        progress=not args.no_progress, resume=args.resume,
    )  # fmt: skip
    result = structured_prune(settings)
    print(result.format_markdown())
    trainings = (("slimming/", args.slimming_epochs), ("finetune/", args.finetune_epochs))
    runs = [folder for folder, epochs in trainings if epochs > 0]
    print(f"written: {', '.join(map(str, [result.cfg_path, result.weights_path, *runs]))}")
    return 0


@command
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging()
    commands = {
        "oneshot": oneshot_or_iterative,
        "iterative": oneshot_or_iterative,
        "lottery": lottery,
        "structured": structured,
    }
    return commands.get(args.command, sensitivity)(args)
