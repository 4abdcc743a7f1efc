"""Lottery tickets: rewinding is bit-exact, the control reinitializes, and a 2-round run writes its table."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
from test_train import random_batch, write_config

from yolov3.checkpoint import load_checkpoint
from yolov3.cli import prune as prune_cli
from yolov3.compression import effective_weight, magnitude_prune, prunable_layers, pruning_masks
from yolov3.compression.lottery import (
    RewindPoint,
    RewindRecorder,
    TicketCallback,
    capture_state,
    random_initialization,
    rewind,
)
from yolov3.loss.yolo_loss import YoloLoss
from yolov3.models import create_model
from yolov3.train.builder import build_trainer
from yolov3.train.config import load_train_config
from yolov3.train.optimizer import OptimizerConfig, build_optimizer
from yolov3.train.step import StepRunner

SPEC = {"name": "yolov3_tiny_test", "kwargs": {"num_classes": 3}}


def assert_rewound(model: torch.nn.Module, state: dict, masks: dict) -> None:
    """Surviving weights bit-identical to ``state``, pruned ones exactly 0, everything else as saved."""
    for name, mask in masks.items():
        weight = effective_weight(model.get_submodule(name))
        saved = state[f"{name}.weight"]
        assert torch.equal(weight[mask == 1], saved[mask == 1]), name
        assert torch.all(weight[mask == 0] == 0), name
    current = model.state_dict()
    for key, value in state.items():
        if key.removesuffix(".weight") not in masks:
            assert torch.equal(current[key], value), key


def test_rewind_point_parsing() -> None:
    assert RewindPoint.parse("init") == RewindPoint(0)
    assert RewindPoint.parse("iteration:250").iteration == 250
    assert str(RewindPoint(3)) == "iteration:3"
    with pytest.raises(ValueError, match="iteration:K"):
        RewindPoint.parse("epoch:2")


def test_rewinding_to_iteration_k_is_bit_identical() -> None:
    torch.manual_seed(0)
    model = create_model(SPEC["name"], **SPEC["kwargs"])
    optimizer = build_optimizer(model, OptimizerConfig(name="sgd", learning_rate=0.05, weight_decay=0.01))
    runner = StepRunner(model, YoloLoss(model.head_specs), optimizer)
    generator = torch.Generator().manual_seed(1)
    saved = None
    for step in range(1, 7):
        runner.micro_step(*random_batch(2, generator))
        if step == 3:
            saved = capture_state(model)  # iteration k = 3
    magnitude_prune(model, 0.4, scope="global")  # masks from the trained weights
    masks = pruning_masks(model)
    ticket = create_model(SPEC["name"], **SPEC["kwargs"])  # a fresh model, other init
    rewind(ticket, saved, masks)
    assert_rewound(ticket, saved, masks)
    with pytest.raises(ValueError, match="unpruned"):
        rewind(ticket, saved, masks)
    state_before = torch.get_rng_state()
    fresh = random_initialization(SPEC, seed=123)
    assert torch.equal(torch.get_rng_state(), state_before)  # the global generator is untouched
    assert torch.equal(fresh["stride32.1.conv.weight"], random_initialization(SPEC, seed=123)["stride32.1.conv.weight"])
    assert not torch.equal(fresh["stride32.1.conv.weight"], saved["stride32.1.conv.weight"])


def test_ticket_callback_rewinds_the_trainer_model_and_its_ema(tmp_path: Path) -> None:
    config = load_train_config(write_config(tmp_path))
    first = build_trainer(config, tmp_path / "first", progress=False)
    recorder = RewindRecorder(0)
    recorder.on_fit_start(first.context)  # iteration 0: the initialization
    model = first.model
    magnitude_prune(model, 0.5, scope="global", layers=prunable_layers(model))
    masks = pruning_masks(model)
    second = build_trainer(config, tmp_path / "second", progress=False)  # reseeded: the same init as the first
    with torch.no_grad():
        for parameter in [*second.model.parameters(), *second.eval_model.parameters()]:
            parameter.add_(1.0)  # so that equal values can only come from rewinding
    assert second.eval_model is not second.model  # the EMA's model
    TicketCallback(recorder.state, masks).on_fit_start(second.context)
    assert_rewound(second.model, recorder.state, masks)
    assert_rewound(second.eval_model, recorder.state, masks)
    assert pruning_masks(second.eval_model).keys() == masks.keys()


@pytest.mark.slow
def test_two_round_lottery_cli_writes_the_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    overrides = {
        "train.epochs": 1,
        "data.dataset.synthetic.num_train": 8,
        "data.dataset.synthetic.num_val": 4,
        "logging.images_every_epochs": 0,
        "logging.histograms_every_epochs": 0,
    }
    cfg = write_config(tmp_path, **overrides)
    out = tmp_path / "lottery"
    arguments = ["lottery", "--cfg", str(cfg), "--rounds", "2", "--rate", "0.3", "--rewind", "iteration:1"]
    assert prune_cli.main([*arguments, "--control", "random_reinit", "--out", str(out), "--no-progress"]) == 0
    assert "| round | sparsity |" in capsys.readouterr().out
    with (out / "lottery.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert [int(row["round"]) for row in rows] == [0, 1, 2]
    for row in rows:
        expected = 1 - 0.7 ** int(row["round"])
        assert float(row["sparsity"]) == pytest.approx(expected, abs=2e-4)
        assert math.isfinite(float(row["map50"]))
        if int(row["round"]) > 0:
            assert math.isfinite(float(row["control_map50"]))
    assert "| 2 | 0.5100 | 0.5100 |" in (out / "lottery.md").read_text()
    assert {"round-0", "round-1", "round-2", "control-1", "control-2", "rewind.pt"} <= {p.name for p in out.iterdir()}
    assert any(path.name.startswith("events.out.tfevents") for path in out.iterdir())
    assert load_checkpoint(out / "rewind.pt").rewind_iteration == 1
    last = load_checkpoint(out / "round-2" / "last.pt").model_state
    masks = {key: value for key, value in last.items() if key.endswith("weight_mask")}
    zeros = sum(int((mask == 0).sum()) for mask in masks.values())
    total = sum(mask.numel() for mask in masks.values())
    assert zeros / total == pytest.approx(0.51, abs=2e-4)
    assert prune_cli.main([*arguments[:-1], "epoch:1", "--out", str(out)]) == 2
    assert "iteration:K" in capsys.readouterr().err
