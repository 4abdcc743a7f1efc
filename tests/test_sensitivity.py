"""Sensitivity: every layer and level measured on a designed case, the budget rule, and the CLI's outputs."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from test_train import write_config

from yolov3.checkpoint import Checkpoint, ModelSpec, save_checkpoint
from yolov3.cli import prune as prune_cli
from yolov3.compression import effective_weight, is_pruned, magnitude_prune, prunable_layers, sparsity_report
from yolov3.compression.schedules import load_pruning_config
from yolov3.compression.sensitivity import (
    DEFAULT_LEVELS,
    SensitivityResult,
    SensitivityRow,
    layer_tolerance,
    load_sparsity_budget,
    measure_sensitivity,
    sensitivity_budget,
)
from yolov3.models import create_model


def tiny_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("yolov3_tiny_test", num_classes=3)


def test_designed_case_measures_every_layer_alone_and_restores_it() -> None:
    """The measure is the squared weight removed from *all* convs: it shows which layer is pruned, by how much,
    and that the others are untouched and restored; with magnitude pruning it can only grow with the level."""
    model = tiny_model()
    layers = prunable_layers(model)
    dense = {name: conv.weight.detach().clone() for name, conv in layers}
    before = {key: value.clone() for key, value in model.state_dict().items()}

    def removed_energy(candidate: torch.nn.Module) -> float:
        return sum(float(((dense[name] - effective_weight(conv)) ** 2).sum()) for name, conv in layers)

    result = measure_sensitivity(model, removed_energy, layers, DEFAULT_LEVELS, progress=False)
    assert result.baseline == 0.0
    assert [(row.layer, row.level) for row in result.rows] == [
        (name, level) for name, _ in layers for level in DEFAULT_LEVELS
    ]
    for name, _ in layers:
        squares = (dense[name] ** 2).flatten().sort().values
        curve = result.curve(name)
        for level, value in curve:
            expected = float(squares[: round(level * squares.numel())].sum())
            assert value == pytest.approx(expected, rel=1e-5, abs=1e-12), (name, level)
        values = [value for _, value in curve]
        assert values == sorted(values)  # more pruning of one layer never lowers the measure
    assert not is_pruned(model)
    assert all(torch.equal(value, before[key]) for key, value in model.state_dict().items())


def test_budget_follows_the_tolerances_and_hits_the_target() -> None:
    model = tiny_model()
    layers = prunable_layers(model)
    sizes = {name: conv.weight.numel() for name, conv in layers}
    result = SensitivityResult("map50", baseline=0.5, levels=DEFAULT_LEVELS)
    breaking = {name: 0.1 * (index % 5) for index, name in enumerate(sizes)}  # mAP collapses past these levels
    for name, size in sizes.items():
        for level in DEFAULT_LEVELS:
            result.rows.append(SensitivityRow(name, size, level, 0.5 if level <= breaking[name] + 1e-9 else 0.3))
    names = list(sizes)
    assert layer_tolerance(result, names[0], 0.01) == 0.0 and layer_tolerance(result, names[3], 0.01) == 0.3
    budget = sensitivity_budget(result, target_sparsity=0.6, tolerance=0.01, max_sparsity=0.95)
    shares = {name: max(breaking[name], 0.1) for name in names}  # at least the smallest level
    scale = budget[names[0]] / shares[names[0]]  # the most sensitive layer: far from the cap
    for name in names:
        assert budget[name] == pytest.approx(min(0.95, scale * shares[name]), abs=1e-9), name
    assert budget[names[0]] < budget[names[2]] < budget[names[3]] == 0.95  # sensitive layers get less
    magnitude_prune(model, budget, scope="layer")
    assert sparsity_report(model, layers).sparsity == pytest.approx(0.6, abs=0.005)
    with pytest.raises(ValueError, match="max_sparsity"):
        sensitivity_budget(result, target_sparsity=0.97, tolerance=0.01)


@pytest.mark.slow
def test_cli_writes_table_plot_and_a_budget_that_hits_the_target(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    overrides = {"data.dataset.synthetic.num_train": 4, "data.dataset.synthetic.num_val": 4}
    cfg = write_config(tmp_path, **overrides)
    spec = {"name": "yolov3_tiny_test", "kwargs": {"num_classes": 3}}
    save_checkpoint(tmp_path / "best.pt", Checkpoint(ModelSpec.from_dict(spec), tiny_model().state_dict()))
    common = ["sensitivity", "--weights", str(tmp_path / "best.pt"), "--cfg", str(cfg), "--no-progress"]
    out = tmp_path / "loss"
    arguments = ["--levels", "0.25", "0.5", "0.75", "--target", "0.7", "--max-batches", "1", "--out", str(out)]
    assert prune_cli.main([*common, *arguments]) == 0
    names = [name for name, _ in prunable_layers(tiny_model())]
    with (out / "sensitivity.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert [(row["layer"], float(row["level"])) for row in rows] == [
        (name, level) for name in names for level in (0.25, 0.5, 0.75)
    ]
    markdown = (out / "sensitivity.md").read_text()
    assert all(f"| {name} |" in markdown for name in names) and "| 25% | 50% | 75% |" in markdown
    assert (out / "sensitivity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    budget = load_sparsity_budget(out / "budget.yaml")
    assert set(budget) == set(names)
    assert load_pruning_config(out / "budget.yaml").scope == "layer"
    model = tiny_model(1)
    magnitude_prune(model, budget, scope="layer")
    assert sparsity_report(model, prunable_layers(model)).sparsity == pytest.approx(0.7, abs=0.005)
    assert "budget.yaml" in capsys.readouterr().out

    out = tmp_path / "map"
    assert prune_cli.main([*common, "--metric", "map", "--levels", "0.5", "--max-batches", "1", "--out", str(out)]) == 0
    with (out / "sensitivity.csv").open() as file:
        assert len(list(csv.DictReader(file))) == len(names)
