"""Sensitivity: every layer and level measured on a designed case, the global curve against an independent global
pruning, the budget rule, the plot, and the CLI's outputs (with the fine-tuned global curve)."""

from __future__ import annotations

import copy
import csv
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from test_train import write_config

from yolov3.checkpoint import Checkpoint, ModelSpec, load_checkpoint, model_from_checkpoint, save_checkpoint
from yolov3.cli import prune as prune_cli
from yolov3.compression import effective_weight, is_pruned, magnitude_prune, prunable_layers, sparsity_report
from yolov3.compression.pipelines_sensitivity import FINETUNE_FOLDER, SensitivitySettings, sensitivity_analysis
from yolov3.compression.schedules import load_pruning_config
from yolov3.compression.sensitivity import (
    DEFAULT_LEVELS,
    GlobalCurve,
    GlobalPoint,
    SensitivityResult,
    SensitivityRow,
    global_label,
    layer_tolerance,
    load_sparsity_budget,
    measure_global_sensitivity,
    measure_sensitivity,
    plot_sensitivity,
    sensitivity_budget,
)
from yolov3.models import create_model
from yolov3.train.config import load_train_config


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


def output_measure(images: torch.Tensor) -> Callable[[torch.nn.Module], float]:
    """A deterministic measure of a whole model: the mean absolute output on ``images`` (eval mode)."""

    @torch.no_grad()
    def measure(candidate: torch.nn.Module) -> float:
        return float(sum(output.abs().mean() for output in candidate.eval()(images)))

    return measure


def test_global_curve_equals_brute_force_magnitude_thresholding() -> None:
    """Each level: the k = round(level * n) smallest |w| over all the prunable convs zeroed (sorted by hand, on a
    copy), then the same measure; the model ends as it started and the rows reach the tables."""
    model = tiny_model()
    layers = prunable_layers(model)
    measure = output_measure(torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)))
    before = {key: value.clone() for key, value in model.state_dict().items()}
    levels = (0.1, 0.5, 0.9)
    curve = measure_global_sensitivity(model, measure, layers, levels, progress=False)
    total = sum(conv.weight.numel() for _, conv in layers)
    assert curve.label == "global" and curve.parameters == total and curve.finetune_epochs == 0
    magnitudes = torch.cat([conv.weight.detach().abs().flatten() for _, conv in layers])
    for point, level in zip(curve.points, levels, strict=True):
        count = round(level * total)
        threshold = magnitudes.sort().values[count - 1]  # random weights: no ties
        pruned = copy.deepcopy(model)
        with torch.no_grad():
            for _, conv in prunable_layers(pruned):
                conv.weight[conv.weight.abs() <= threshold] = 0.0
        assert sparsity_report(pruned, prunable_layers(pruned)).zeros == count
        assert point.level == level and point.sparsity == pytest.approx(count / total)
        assert point.value == pytest.approx(measure(pruned), rel=1e-5), level
    assert not is_pruned(model)
    assert all(torch.equal(value, before[key]) for key, value in model.state_dict().items())
    values = [point.value for point in curve.points]
    assert len(set(values)) == len(values)  # the levels differ

    result = SensitivityResult("loss", baseline=measure(model), levels=levels, global_curves=[curve])
    assert (
        f"| global | {total:,} | " + " | ".join(f"{value:.4f}" for value in values) + " |" in result.format_markdown()
    )
    rows = list(csv.DictReader(result.format_csv().splitlines()))
    assert [(row["layer"], float(row["level"]), float(row["loss"])) for row in rows] == [
        ("global", level, pytest.approx(value, abs=1e-6)) for level, value in zip(levels, values, strict=True)
    ]


def test_plot_draws_layers_global_curves_and_baseline(tmp_path: Path) -> None:
    """Few layers (named in the legend) and many (a colour bar); a loss that explodes goes to a log scale."""
    for count, metric, explode in ((3, "map50", 1.0), (40, "loss", 100.0)):
        levels = (0.25, 0.5, 0.75)
        result = SensitivityResult(metric, baseline=0.5, levels=levels)
        for index in range(count):
            for level in levels:
                result.rows.append(SensitivityRow(f"layer{index}", 100, level, 0.5 - 0.1 * level * index / count))
        for epochs in (0, 2):
            points = tuple(GlobalPoint(level, 0.5 * explode**level, level) for level in levels)
            result.global_curves.append(GlobalCurve(global_label(epochs), 100 * count, epochs, points))
        path = tmp_path / f"{count}" / "sensitivity.png"
        plot_sensitivity(result, path)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert global_label(1) == "global, 1 epoch fine-tuned" and global_label(3) == "global, 3 epochs fine-tuned"


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
        (name, level) for name in [*names, "global"] for level in (0.25, 0.5, 0.75)
    ]
    markdown = (out / "sensitivity.md").read_text()
    assert all(f"| {name} |" in markdown for name in [*names, "global"]) and "| 25% | 50% | 75% |" in markdown
    assert not (out / FINETUNE_FOLDER).exists()  # no fine-tuning unless asked
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
        assert len(list(csv.DictReader(file))) == len(names) + 1  # and the global row


def test_fine_tuned_global_curve_holds_the_sparsity(tmp_path: Path) -> None:
    """``finetune_epochs=1``: one fine-tuning run per level in ``out/finetune``, its (EMA) model at the level's
    sparsity (masks held), scored with the same measure: a row in the tables, a line in the plot."""
    overrides = {"data.dataset.synthetic.num_train": 4, "data.dataset.synthetic.num_val": 4}
    config = load_train_config(write_config(tmp_path, **overrides))
    spec = {"name": "yolov3_tiny_test", "kwargs": {"num_classes": 3}}
    save_checkpoint(tmp_path / "best.pt", Checkpoint(ModelSpec.from_dict(spec), tiny_model().state_dict()))
    out = tmp_path / "finetuned"
    settings = SensitivitySettings(config, tmp_path / "best.pt", out, levels=(0.3, 0.6), max_batches=1,
                                   finetune_epochs=1, progress=False)  # fmt: skip
    result = sensitivity_analysis(settings).result
    label = "global, 1 epoch fine-tuned"
    assert [curve.label for curve in result.global_curves] == ["global", label]
    finetuned = result.global_curves[1]
    assert [point.level for point in finetuned.points] == [0.3, 0.6]
    assert [point.sparsity for point in finetuned.points] == pytest.approx([0.3, 0.6], abs=1e-4)
    assert finetuned.curve() != result.global_curves[0].curve()  # the fine-tuning changed the weights
    with (out / "sensitivity.csv").open() as file:
        rows = [row for row in csv.DictReader(file) if row["layer"].startswith("global")]
    assert [(row["layer"], float(row["level"])) for row in rows] == [
        ("global", 0.3),
        ("global", 0.6),
        (label, 0.3),
        (label, 0.6),
    ]
    assert f"| {label} |" in (out / "sensitivity.md").read_text()
    assert (out / "sensitivity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for level in (0.3, 0.6):
        trained = load_checkpoint(out / FINETUNE_FOLDER / f"level-{level:g}" / "last.pt")
        assert trained.epoch == 0 and trained.ema_state is not None  # one epoch, done; the EMA scored
        model = model_from_checkpoint(trained)  # the EMA, masks made permanent
        assert sparsity_report(model, prunable_layers(model)).sparsity == pytest.approx(level, abs=1e-4)


def test_cli_parses_the_fine_tuning_options(tmp_path: Path) -> None:
    common = ["sensitivity", "--weights", "best.pt", "--cfg", "args.yaml"]
    arguments = prune_cli.parse_args(common)
    assert arguments.finetune_epochs == 0 and arguments.finetune_lr is None
    arguments = prune_cli.parse_args([*common, "--finetune-epochs", "2", "--finetune-lr", "0.001"])
    assert arguments.finetune_epochs == 2 and arguments.finetune_lr == 0.001
    config = load_train_config(write_config(tmp_path))
    with pytest.raises(ValueError, match=r"finetune_epochs must be >= 0 .*got -1"):
        SensitivitySettings(config, tmp_path / "best.pt", tmp_path, finetune_epochs=-1)
