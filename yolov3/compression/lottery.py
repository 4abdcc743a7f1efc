"""Lottery tickets (Frankle & Carbin 2019): iterative magnitude pruning with rewinding.

Round 0 trains the dense network and records the weights to rewind to: at initialization (``init``) or
after ``K`` optimizer steps (``iteration:K``, Frankle et al. 2020's late rewinding, for deeper nets). Each
round ``r = 1..R`` then

1. prunes ``rate`` of the remaining weights of the previous round's *trained* (non-EMA) weights, globally by
   magnitude over the prunable convs: the masks keep ``(1 - rate)^r`` of the weights;
2. rewinds: loads the recorded state (weights and batch-norm statistics, bit for bit) into a fresh model and
   applies the masks, so surviving weights equal their recorded values exactly; the EMA restarts from them;
3. retrains with the same config (full schedule from step 0, optimizer state fresh; the masks hold).

The random-reinitialization control trains the same masks on a fresh random initialization (seed + round):
a winning ticket should beat it. The result table (round, sparsity of the prunable convs, final mAP@0.5)
is written as ``lottery.md`` and ``lottery.csv`` in the run folder and logged to TensorBoard (``lottery/*``,
step = round); each training run has its own folder (``round-r``, ``control-r``), and ``rewind.pt`` holds
the recorded state.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from yolov3.atomic import write_text_atomic
from yolov3.checkpoint import Checkpoint, ModelSpec, save_checkpoint
from yolov3.compression.masks import (
    DEFAULT_SKIP,
    apply_masks,
    is_pruned,
    magnitude_prune,
    prunable_layers,
    pruning_masks,
    sparsity_report,
)
from yolov3.models import create_model
from yolov3.train.builder import build_trainer
from yolov3.train.callbacks import TrainerCallback, TrainingContext
from yolov3.train.config import TrainConfig
from yolov3.train.ema import follow_pruning
from yolov3.train.tensorboard import TrainingBoard
from yolov3.train.trainer import Trainer

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RewindPoint:
    """Where surviving weights are rewound to: optimizer step ``iteration`` of the dense run (0 = init)."""

    iteration: int = 0

    @classmethod
    def parse(cls, text: str) -> RewindPoint:
        """``"init"`` or ``"iteration:K"`` (K >= 0)."""
        if text == "init":
            return cls(0)
        match = re.fullmatch(r"iteration:(\d+)", text)
        if match is None:
            raise ValueError(f"rewind must be 'init' or 'iteration:K' (K an integer >= 0), got {text!r}")
        return cls(int(match.group(1)))

    def __str__(self) -> str:
        return "init" if self.iteration == 0 else f"iteration:{self.iteration}"


def capture_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of ``model.state_dict()`` (parameters and buffers), to rewind to later."""
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def rewind(model: nn.Module, state: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor]) -> None:
    """Load ``state`` into the unpruned ``model``, then prune it with ``masks``.

    The surviving effective weights are then bit-identical to ``state`` (``orig * 1.0``), the pruned ones 0.
    """
    if is_pruned(model):
        raise ValueError("rewind needs an unpruned model (a fresh one), so that saved weights load as they are")
    model.load_state_dict(dict(state))
    apply_masks(model, masks)


def random_initialization(model_spec: Mapping[str, Any], seed: int) -> dict[str, torch.Tensor]:
    """The state of a fresh model built by ``model_spec`` with ``seed`` (the global RNG is left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = create_model(model_spec["name"], **model_spec.get("kwargs", {}))
    return capture_state(model)


class RewindRecorder(TrainerCallback):
    """Records the model state after ``iteration`` optimizer steps (0: before training)."""

    def __init__(self, iteration: int) -> None:
        self.iteration = iteration
        self.state: dict[str, torch.Tensor] | None = None

    def on_fit_start(self, context: TrainingContext) -> None:
        if self.iteration > context.total_steps:
            raise ValueError(f"rewind iteration {self.iteration} is past the run's {context.total_steps} steps")
        if self.iteration == context.step:
            self.state = capture_state(context.model)

    def on_optimizer_step(self, context: TrainingContext, step: int) -> None:
        if step == self.iteration:
            self.state = capture_state(context.model)


class TicketCallback(TrainerCallback):
    """Before training, rewinds the fresh trained model (and its EMA) to ``state`` and applies ``masks``."""

    def __init__(self, state: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor]) -> None:
        self.state, self.masks = state, masks

    def on_fit_start(self, context: TrainingContext) -> None:
        state = {name: value.to(context.device) for name, value in self.state.items()}
        rewind(context.model, state, self.masks)
        average = context.ema_model
        if context.ema is not None and average is not None:
            average.load_state_dict(state)
            follow_pruning(average, context.model)
            context.ema.n_averaged.zero_()  # the average restarts from the rewound model


@dataclass(frozen=True)
class LotteryRow:
    round: int
    sparsity: float
    map50: float
    control_map50: float | None = None


@dataclass
class LotteryResult:
    rewind: RewindPoint
    rate: float
    rows: list[LotteryRow] = field(default_factory=list)

    def format_markdown(self) -> str:
        control = any(row.control_map50 is not None for row in self.rows)
        header = "| round | sparsity | expected 1-(1-p)^r | mAP@0.5 |" + (" mAP@0.5 random reinit |" if control else "")
        lines = [
            f"Lottery tickets: global magnitude pruning of {self.rate:.2%} per round, rewind to {self.rewind}.",
            "",
            header,
            "| ---: | ---: | ---: | ---: |" + (" ---: |" if control else ""),
        ]
        for row in self.rows:
            expected = 1.0 - (1.0 - self.rate) ** row.round
            line = f"| {row.round} | {row.sparsity:.4f} | {expected:.4f} | {row.map50:.4f} |"
            if control:
                line += f" {row.control_map50:.4f} |" if row.control_map50 is not None else " |"
            lines.append(line)
        return "\n".join(lines) + "\n"

    def format_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["round", "sparsity", "map50", "control_map50"])
        for row in self.rows:
            control = "" if row.control_map50 is None else f"{row.control_map50:.6f}"
            writer.writerow([row.round, f"{row.sparsity:.6f}", f"{row.map50:.6f}", control])
        return buffer.getvalue()

    def write(self, run_dir: Path) -> None:
        write_text_atomic(run_dir / "lottery.md", self.format_markdown())
        write_text_atomic(run_dir / "lottery.csv", self.format_csv())


def _train(config: TrainConfig, run_dir: Path, callbacks: Sequence[TrainerCallback], progress: bool) -> Trainer:
    trainer = build_trainer(config, run_dir, progress=progress, callbacks=callbacks)
    trainer.fit()
    return trainer


def _final_map(trainer: Trainer) -> float:
    values = [entry["mAP50"] for entry in trainer.history if "mAP50" in entry]
    return float(values[-1]) if values else float("nan")


def run_lottery(
    config: TrainConfig,
    run_dir: str | Path,
    rounds: int,
    rate: float,
    rewind_point: RewindPoint = RewindPoint(0),
    control: bool = False,
    skip: Sequence[str] = DEFAULT_SKIP,
    progress: bool = True,
) -> LotteryResult:
    """Train, then ``rounds`` rounds of prune-rewind-retrain (and the random-reinit control); write the table."""
    if rounds < 1 or not 0.0 < rate < 1.0:
        raise ValueError(f"rounds >= 1 and 0 < rate < 1 are required, got {rounds}, {rate}")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    result = LotteryResult(rewind_point, rate)
    board = TrainingBoard(run_dir)
    recorder = RewindRecorder(rewind_point.iteration)
    trained = _train(config, run_dir / "round-0", [recorder], progress)
    if recorder.state is None:  # pragma: no cover - RewindRecorder checks the step count before training
        raise RuntimeError(f"rewind point {rewind_point} was never reached")
    spec = ModelSpec.from_dict(trained.model_spec)
    rewind = Checkpoint(spec, recorder.state, rewind_iteration=rewind_point.iteration)
    save_checkpoint(run_dir / "rewind.pt", rewind)
    result.rows.append(LotteryRow(0, 0.0, _final_map(trained)))
    for round_number in range(1, rounds + 1):
        model = trained.model
        layers = prunable_layers(model, skip)
        magnitude_prune(model, rate, "global", layers)
        masks = pruning_masks(model)
        trained = _train(config, run_dir / f"round-{round_number}", [TicketCallback(recorder.state, masks)], progress)
        sparsity = sparsity_report(trained.model, prunable_layers(trained.model, skip)).sparsity
        control_map = None
        if control:
            fresh = random_initialization(trained.model_spec, config.seed + 1 + round_number)
            reinit = _train(config, run_dir / f"control-{round_number}", [TicketCallback(fresh, masks)], progress)
            control_map = _final_map(reinit)
        row = LotteryRow(round_number, sparsity, _final_map(trained), control_map)
        result.rows.append(row)
        logger.info("lottery round %d: sparsity %.4f, mAP@0.5 %.4f", round_number, row.sparsity, row.map50)
    for row in result.rows:
        board.scalars({"sparsity": row.sparsity, "mAP50": row.map50}, row.round, prefix="lottery/")
        if row.control_map50 is not None:
            board.scalars({"mAP50_random_reinit": row.control_map50}, row.round, prefix="lottery/")
    board.close()
    result.write(run_dir)
    return result
