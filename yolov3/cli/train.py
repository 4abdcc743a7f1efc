"""``python -m yolov3.train --cfg configs/shapes.yaml [--set key=value ...] [--resume RUN_DIR]``.

Trains a detector: the resolved config goes to ``logs/<run>/args.yaml`` (``--cfg logs/<run>/args.yaml``
repeats the run), TensorBoard logs to ``logs/<run>`` (``tensorboard --logdir logs``), and ``best.pt`` /
``last.pt`` to the same folder. ``--resume logs/<run>`` continues a killed run from its ``last.pt``; it
refuses an ``args.yaml`` (or ``--set``) that changes the model or data the run was trained on, naming the
key (``--force`` accepts it). A run killed before its first ``last.pt`` has nothing to continue: ``--resume``
then starts it afresh from its ``args.yaml`` (logged), and a run killed before it wrote ``args.yaml`` is an
error that says to start it with ``--cfg``. Partial temporary files that killed writes left are removed.
Under ``torchrun --nproc_per_node N -m yolov3.train ...`` it trains with DistributedDataParallel. ``python -m
yolov3.train`` runs :func:`main` through ``yolov3/train/__main__.py``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from yolov3.cli.runner import command, configure_logging
from yolov3.config_loading import ConfigError, to_dict
from yolov3.train.builder import build_trainer
from yolov3.train.config import load_train_config
from yolov3.train.distributed import cleanup_distributed, init_distributed
from yolov3.train.interrupt import InterruptHandler, TrainingInterruptedError
from yolov3.train.run_folder import check_resume_config, prepare_run_folder, run_directory
from yolov3.train.trainer import TrainResult

logger = logging.getLogger("yolov3.train")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m yolov3.train", description=__doc__.splitlines()[0])
    parser.add_argument("--cfg", type=Path, help="training config YAML (e.g. configs/shapes.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set train.epochs=3 (repeatable)")  # fmt: skip
    parser.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue the run in RUN_DIR from last.pt")
    parser.add_argument("--force", action="store_true",
                        help="with --resume: accept a changed model or data config")  # fmt: skip
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if not args.cfg and not args.resume:
        parser.error("give --cfg (a new run) or --resume RUN_DIR")
    return args


@command
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging()
    if args.resume:
        run_dir = args.resume if args.resume.is_dir() else args.resume.parent
        if not args.cfg and not (run_dir / "args.yaml").is_file():
            raise ConfigError(
                f"{run_dir / 'args.yaml'}: not found: {run_dir} is not a run folder, or its run was stopped "
                "before it wrote its config; start the run with --cfg"
            )
        config = load_train_config(args.cfg or run_dir / "args.yaml", args.overrides)
        if not args.force:
            check_resume_config(run_dir / "last.pt", to_dict(config))
    else:
        config = load_train_config(args.cfg, args.overrides)
        run_dir = run_directory(config, args.cfg)
    try:
        context = init_distributed(config.device)
    except RuntimeError as error:  # device: cuda without CUDA, or a process group that cannot form
        raise ConfigError(str(error)) from error
    try:
        if context.is_main:
            prepare_run_folder(run_dir, config, context.device)
        resume = bool(args.resume) and (run_dir / "last.pt").is_file()
        if args.resume and not resume and context.is_main:
            logger.warning("%s: no last.pt (stopped before its first epoch completed): starting afresh", run_dir)
        with InterruptHandler() as interrupt:
            trainer = build_trainer(
                config,
                run_dir,
                resume=resume,
                progress=not args.no_progress,
                distributed=context,
                callbacks=[interrupt],
            )
            result = trainer.fit()
    except TrainingInterruptedError as stop:
        if context.is_main:
            report_interrupted(stop, run_dir)
        return 128 + stop.signal_number
    finally:
        cleanup_distributed(context)
    if context.is_main:
        report(result)
    return 0


def report_interrupted(stop: TrainingInterruptedError, run_dir: Path) -> None:
    """One line: what stopped training, what ``last.pt`` holds, the command that continues."""
    if (run_dir / "last.pt").is_file():
        print(f"{stop}: {run_dir / 'last.pt'} holds the last completed epoch; "
              f"resume with: python -m yolov3.train --resume {run_dir}", file=sys.stderr)  # fmt: skip
    else:
        print(f"{stop} before the first epoch completed: nothing to resume", file=sys.stderr)


def report(result: TrainResult) -> None:
    print(f"run: {result.run_dir}")
    print(f"best mAP@0.5: {result.best_map50:.4f} (checkpoint {result.run_dir / 'best.pt'})")
    print(f"TensorBoard: tensorboard --logdir {result.run_dir.parent}")
