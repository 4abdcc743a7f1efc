"""Unstructured pruning: exact counts, masks that hold through training, EMA, copies and resume; finalize; CLI."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from test_train import random_batch, write_config

from yolov3.checkpoint import Checkpoint, ModelSpec, load_checkpoint, model_from_checkpoint, save_checkpoint
from yolov3.cli import prune as prune_cli
from yolov3.compression import (
    GradualPruningCallback,
    PruningConfig,
    apply_masks,
    cubic_sparsity,
    effective_weight,
    finalize_pruning,
    is_pruned,
    is_pruning_step,
    load_pruning_config,
    magnitude_prune,
    prunable_layers,
    prune_to_sparsity,
    pruning_masks,
    sparsity_report,
)
from yolov3.loss.yolo_loss import YoloLoss
from yolov3.models import create_model
from yolov3.train.builder import build_trainer
from yolov3.train.config import load_train_config
from yolov3.train.ema import build_ema
from yolov3.train.optimizer import OptimizerConfig, build_optimizer
from yolov3.train.step import StepRunner
from yolov3.train.trainer import Trainer


def tiny_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("yolov3_tiny_test", num_classes=3)


def zeros_of(conv: torch.nn.Module) -> int:
    return int((effective_weight(conv) == 0).sum())


def assert_masks_hold(model: torch.nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Same masks, binary, and the effective weights exactly zero where they are zero."""
    assert pruning_masks(model).keys() == masks.keys()
    for name, module in model.named_modules():
        if name in masks:
            assert torch.equal(module.weight_mask, masks[name]), name
            assert set(module.weight_mask.unique().tolist()) <= {0.0, 1.0}, name
            assert torch.all(effective_weight(module)[masks[name] == 0] == 0), name


def test_prunable_layers_skip_the_first_conv_and_the_output_convs() -> None:
    model = tiny_model()
    every = [name for name, _ in prunable_layers(model, skip=())]
    names = [name for name, _ in prunable_layers(model)]
    assert set(every) - set(names) == {"stride16.0.conv", "head_large.1.conv", "head_medium.1.conv"}
    assert [name for name, _ in prunable_layers(model, skip=("first", "heads", "head_*"))] == [
        name for name in names if not name.startswith("head_")
    ]
    yolo = create_model("yolov3_test", num_classes=3)
    skipped = {name for name, _ in prunable_layers(yolo, skip=())} - {name for name, _ in prunable_layers(yolo)}
    assert skipped == {"backbone.stem.conv", "blocks.0.output.conv", "blocks.1.output.conv", "blocks.2.output.conv"}


def test_layer_scope_prunes_exactly_half_of_each_tensor_by_magnitude() -> None:
    model = tiny_model()
    layers = prunable_layers(model)
    magnitude_prune(model, 0.5, scope="layer")
    for name, conv in layers:
        weight = effective_weight(conv)
        count = weight.numel()
        assert zeros_of(conv) == round(0.5 * count), name
        kept = conv.weight_orig.detach().abs()[conv.weight_mask == 1]
        dropped = conv.weight_orig.detach().abs()[conv.weight_mask == 0]
        assert dropped.max() <= kept.min(), name  # the smallest magnitudes went
    report = sparsity_report(model)
    assert report.layer("stride16.0.conv").zeros == 0 and not report.layer("stride16.0.conv").masked


def test_rounds_are_cumulative_layer_and_global() -> None:
    rate, rounds = 0.5, 3
    model = tiny_model()
    layers = prunable_layers(model)
    sizes = {name: conv.weight.numel() for name, conv in layers}
    for _ in range(rounds):
        magnitude_prune(model, rate, scope="layer")
    for name, conv in layers:
        remaining = sizes[name]
        for _ in range(rounds):
            remaining -= round(rate * remaining)  # torch prunes round(amount * remaining) each time
        assert sizes[name] - zeros_of(conv) == remaining, name
        assert abs(remaining - (1 - rate) ** rounds * sizes[name]) <= 1, name

    model = tiny_model(1)
    layers = prunable_layers(model)
    total, remaining = sum(sizes.values()), sum(sizes.values())
    for _ in range(rounds):
        magnitude_prune(model, 0.2, scope="global")
        remaining -= round(0.2 * remaining)
        assert total - sparsity_report(model, layers).zeros == remaining
    assert abs(remaining - 0.8**rounds * total) <= len(layers)
    global_masks = pruning_masks(model)
    assert len({float((mask == 0).float().mean()) for mask in global_masks.values()}) > 1  # uneven per layer


def test_prune_to_sparsity_is_exact_and_idempotent() -> None:
    model = tiny_model()
    layers = prunable_layers(model)
    total = sum(conv.weight.numel() for _, conv in layers)
    prune_to_sparsity(model, 0.3)
    assert sparsity_report(model, layers).zeros == round(0.3 * total)
    masks = pruning_masks(model)
    prune_to_sparsity(model, 0.3)
    assert all(torch.equal(mask, pruning_masks(model)[name]) for name, mask in masks.items())
    prune_to_sparsity(model, 0.7)
    assert sparsity_report(model, layers).zeros == round(0.7 * total)
    for name, mask in pruning_masks(model).items():
        assert torch.all(mask[masks[name] == 0] == 0), name  # never un-prunes
    budget = {"stride16.2.conv": 0.5, "reduce.conv": 0.9}
    fresh = tiny_model()
    prune_to_sparsity(fresh, budget, scope="layer")
    report = sparsity_report(fresh)
    assert report.layer("reduce.conv").zeros == round(0.9 * 1024) and report.layer("stride16.2.conv").zeros == 9
    with pytest.raises(KeyError, match="not prunable"):
        magnitude_prune(fresh, {"head_large.1.conv": 0.5}, scope="layer")


@pytest.mark.parametrize("amp", ["none", "bf16"])
def test_masks_hold_through_sgd_momentum_decay_amp_ema_and_deepcopy(amp: str) -> None:
    model = tiny_model()
    # The optimizer first, as the trainer does: its parameter groups decay parameters named "weight".
    optimizer = build_optimizer(model, OptimizerConfig(name="sgd", learning_rate=0.05, momentum=0.9, weight_decay=0.05))
    magnitude_prune(model, 0.6, scope="global")
    masks = pruning_masks(model)
    before = {name: module.weight_orig.detach().clone() for name, module in model.named_modules() if name in masks}
    ema = build_ema(model, decay=0.9, ramp_steps=1.0)  # a deep copy of the pruned model
    runner = StepRunner(model, YoloLoss(model.head_specs), optimizer, amp=amp, ema=ema)
    generator = torch.Generator().manual_seed(0)
    for step in range(20):
        images, targets = random_batch(2, generator)
        runner.micro_step(images, targets)
        if step == 9:  # prune more mid-training: the EMA must take the new masks, not average them
            magnitude_prune(model, 0.5, scope="global")
            masks = pruning_masks(model)
    assert runner.optimizer_steps == 20
    assert_masks_hold(model, masks)
    assert_masks_hold(ema.module, masks)
    for name, values in before.items():  # weight decay and momentum moved weight_orig, pruned positions too
        moved = model.get_submodule(name).weight_orig.detach() != values
        assert moved[masks[name] == 0].any(), name
    copied = copy.deepcopy(model)
    assert_masks_hold(copied, masks)
    copied.eval(), model.eval()
    image = torch.rand(1, 3, 64, 64)
    for ours, theirs in zip(model(image), copied(image), strict=True):
        assert torch.equal(ours, theirs)
    assert_masks_hold(copy.deepcopy(ema).module, masks)


def test_finalize_keeps_outputs_and_round_trips_darknet_weights(tmp_path: Path) -> None:
    model = tiny_model().eval()
    magnitude_prune(model, 0.7, scope="global")
    image = torch.rand(2, 3, 64, 64)
    expected = model(image)
    zeros = sparsity_report(model).zeros
    assert is_pruned(model)
    finalize_pruning(model)
    assert not is_pruned(model)
    assert not [key for key in model.state_dict() if key.endswith(("_orig", "_mask"))]
    for ours, theirs in zip(model(image), expected, strict=True):
        assert torch.equal(ours, theirs)
    plain = tiny_model(5).eval()
    plain.load_state_dict(model.state_dict())  # loads as a plain model
    model.save_darknet_weights(tmp_path / "pruned.weights")
    reloaded = tiny_model(6).eval()
    reloaded.load_darknet_weights(tmp_path / "pruned.weights")
    assert sparsity_report(reloaded).zeros == zeros
    for ours, theirs in zip(reloaded(image), expected, strict=True):
        assert torch.equal(ours, theirs)


def test_checkpoint_round_trip_recreates_the_reparametrization(tmp_path: Path) -> None:
    model = tiny_model().eval()
    magnitude_prune(model, 0.5, scope="layer")
    masks = pruning_masks(model)
    spec = {"name": "yolov3_tiny_test", "kwargs": {"num_classes": 3}}
    save_checkpoint(tmp_path / "pruned.pt", Checkpoint(ModelSpec.from_dict(spec), model.state_dict()))
    rebuilt = model_from_checkpoint(load_checkpoint(tmp_path / "pruned.pt"), keep_pruning=True).eval()
    assert is_pruned(rebuilt)
    assert_masks_hold(rebuilt, masks)
    plain = model_from_checkpoint(load_checkpoint(tmp_path / "pruned.pt")).eval()  # for inference: masks baked in
    assert not is_pruned(plain) and sparsity_report(plain).zeros == sparsity_report(model).zeros
    image = torch.rand(1, 3, 64, 64)
    for candidate in (rebuilt, plain):
        for ours, theirs in zip(model(image), candidate(image), strict=True):
            assert torch.equal(ours, theirs)
    other = tiny_model(3)
    apply_masks(other, masks)
    assert_masks_hold(other, masks)


def test_cubic_schedule_against_hand_computed_values(tmp_path: Path) -> None:
    # s_t = 0.8 + (0 - 0.8) (1 - (t - 10) / 40)^3, pruning at t = 10, 20, 30, 40, 50
    expected = {9: 0.0, 10: 0.0, 20: 0.8 * 37 / 64, 30: 0.7, 40: 0.8 * 63 / 64, 50: 0.8, 70: 0.8}
    for step, value in expected.items():
        assert cubic_sparsity(step, 0.8, 0.0, 10, 50) == pytest.approx(value, abs=1e-12)
    assert [t for t in range(60) if is_pruning_step(t, 10, 50, 10)] == [10, 20, 30, 40, 50]
    assert [t for t in range(60) if is_pruning_step(t, 0, 25, 10)] == [0, 10, 20, 25]
    path = tmp_path / "pruning.yaml"
    path.write_text("method: iterative\ntarget_sparsity: 0.875\nrounds: 3\nskip: [first, heads, 'head_*']\n")
    config = load_pruning_config(path)
    assert config.round_rate == pytest.approx(0.5) and config.sparsity_after_round(2) == pytest.approx(0.75)
    assert config.skip == ("first", "heads", "head_*")
    path.write_text("method: gradual\nend_step: 0\n")
    with pytest.raises(ValueError, match="end_step"):
        load_pruning_config(path)


@pytest.mark.slow
def test_gradual_pruning_in_the_trainer_survives_checkpoint_and_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    overrides = {"train.epochs": 2, "logging.images_every_epochs": 0, "logging.histograms_every_epochs": 0}
    config = load_train_config(write_config(tmp_path, **overrides))  # 4 optimizer steps per epoch
    pruning = PruningConfig(method="gradual", target_sparsity=0.6, start_step=0, end_step=8, frequency=2)

    class KilledError(Exception):
        pass

    original = Trainer._train_epoch

    def killed_in_epoch_two(self, epoch):
        if epoch == 1:
            raise KilledError
        return original(self, epoch)

    monkeypatch.setattr(Trainer, "_train_epoch", killed_in_epoch_two)
    with pytest.raises(KilledError):
        build_trainer(config, tmp_path / "run", progress=False, callbacks=[GradualPruningCallback(pruning)]).fit()
    monkeypatch.setattr(Trainer, "_train_epoch", original)
    saved = load_checkpoint(tmp_path / "run" / "last.pt")
    assert saved.callbacks[0]["last_pruned_step"] == 4
    halfway = model_from_checkpoint(saved, use_ema=False, keep_pruning=True)
    layers = prunable_layers(halfway)
    total = sum(conv.weight.numel() for _, conv in layers)
    assert sparsity_report(halfway, layers).zeros == round(pruning.sparsity_at_step(4) * total)
    halfway_masks = pruning_masks(halfway)

    callback = GradualPruningCallback(pruning)
    trainer = build_trainer(config, tmp_path / "run", resume=True, progress=False, callbacks=[callback])
    assert trainer.eval_model is not trainer.model  # the EMA's model
    assert_masks_hold(trainer.model, halfway_masks)  # restored before any step
    assert_masks_hold(trainer.eval_model, halfway_masks)
    trainer.fit()
    assert [step for step, _ in callback.history] == [0, 2, 4, 6, 8]
    final_masks = pruning_masks(trainer.model)
    assert sparsity_report(trainer.model, layers=prunable_layers(trainer.model)).zeros == round(0.6 * total)
    for name, mask in halfway_masks.items():
        assert torch.all(final_masks[name][mask == 0] == 0), name
    assert_masks_hold(trainer.eval_model, final_masks)
    assert trainer.history[-1]["prune/sparsity"] == pytest.approx(round(0.6 * total) / total)


@pytest.mark.slow
def test_oneshot_and_iterative_cli_write_tables_and_a_plain_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    overrides = {
        "data.dataset.synthetic.num_train": 8,
        "data.dataset.synthetic.num_val": 4,
        "logging.images_every_epochs": 0,
        "logging.histograms_every_epochs": 0,
    }
    cfg = write_config(tmp_path, **overrides)
    model = tiny_model()
    spec = {"name": "yolov3_tiny_test", "kwargs": {"num_classes": 3}}
    save_checkpoint(tmp_path / "best.pt", Checkpoint(ModelSpec.from_dict(spec), model.state_dict()))
    common = ["--weights", str(tmp_path / "best.pt"), "--cfg", str(cfg), "--no-progress", "--finetune-epochs", "1"]
    out = tmp_path / "oneshot"
    assert prune_cli.main(["oneshot", *common, "--target", "0.75", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| pruned, before fine-tuning | 0.7500 |" in printed and "| fine-tuned (1 epochs) | 0.7500 |" in printed
    assert {"prune.md", "prune.csv", "pruned.pt", "last.pt"} <= {path.name for path in out.iterdir()}
    checkpoint = load_checkpoint(out / "pruned.pt")
    assert not [key for key in checkpoint.model_state if key.endswith(("_orig", "_mask"))]
    plain = model_from_checkpoint(checkpoint)
    assert not is_pruned(plain)
    layers = prunable_layers(plain)
    total = sum(conv.weight.numel() for _, conv in layers)
    assert sparsity_report(plain, layers).zeros >= round(0.75 * total)
    plain.save_darknet_weights(tmp_path / "pruned.weights")  # a plain model: Darknet export works

    out = tmp_path / "iterative"
    arguments = ["iterative", *common, "--rounds", "2", "--rate", "0.5", "--scope", "layer", "--out", str(out)]
    assert prune_cli.main(arguments) == 0
    rows = (out / "prune.csv").read_text().splitlines()
    assert rows[0] == "stage,sparsity,mAP@0.5" and len(rows) == 4  # dense, round 1, round 2
    assert [row.split(",")[1] for row in rows[1:]] == ["0.0000", "0.5000", "0.7500"]
    assert prune_cli.main(["oneshot", *common, "--target", "1.5", "--out", str(out)]) == 2
    assert "target_sparsity < 1" in capsys.readouterr().err
