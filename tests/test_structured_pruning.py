"""Structured channel pruning and network slimming: valid smaller networks, exact surgery, Darknet round trip."""

from __future__ import annotations

import copy
import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_train import random_batch, write_config
from torch import nn

from yolov3.checkpoint import load_checkpoint, model_from_checkpoint
from yolov3.compression.slimming import SlimmingCallback, SlimmingPenalty, runner_gradient_scale, slimming_scales
from yolov3.compression.structured import (
    analyze_channels,
    apply_plan,
    channel_importance,
    expected_channel_outputs,
    flops,
    plan_pruning,
    prune_channels,
)
from yolov3.darknet.cfg import ConvolutionalSection, format_cfg, parse_cfg, parse_cfg_text
from yolov3.loss.yolo_loss import YoloLoss
from yolov3.models import Darknet, create_model, darknet_cfg
from yolov3.models.layers import ConvBNAct
from yolov3.models.yolov3 import YOLOv3
from yolov3.train.builder import build_trainer
from yolov3.train.config import load_train_config
from yolov3.train.step import StepRunner

INPUT_SIZES = ((64, 64), (96, 128), (160, 96))
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def build(name: str, seed: int = 0, **options: object) -> nn.Module:
    """A registered test model with random weights and non-trivial batch-norm parameters and statistics, in eval."""
    torch.manual_seed(seed)
    model = create_model(name, **options)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def outputs_of(model: nn.Module, height: int, width: int) -> list[torch.Tensor]:
    image = torch.rand(2, 3, height, width, generator=torch.Generator().manual_seed(height * width))
    with torch.no_grad():
        return model(image)


def filters_by_layer(model: nn.Module) -> dict[int, int]:
    layers = model.to_darknet_cfg().layers
    return {index: s.filters for index, s in enumerate(layers) if isinstance(s, ConvolutionalSection)}


def silence_channels(model: nn.Module, fraction: float, criterion: str, seed: int = 0) -> dict[int, set[int]]:
    """Make random filters of every prunable conv output exactly leaky(0) = 0; returns them per layer.

    ``bn_gamma``: gamma = beta = 0. ``l1``: the filter's weights = 0, and beta = 0 with the running statistics
    a zero filter has (mean 0, variance 0; gamma kept).
    Never more than the pruning floor (10% of the filters, at least one) allows.
    """
    generator = torch.Generator().manual_seed(seed)
    graph = analyze_channels(model)
    silenced = {}
    with torch.no_grad():
        for index in graph.prunable:
            module = graph.modules[index]
            filters = module.conv.out_channels
            count = min(round(fraction * filters), filters - max(1, math.ceil(0.1 * filters)))
            chosen = torch.randperm(filters, generator=generator)[:count]
            if criterion == "bn_gamma":
                module.bn.weight[chosen] = 0.0
            else:
                module.conv.weight[chosen] = 0.0
                module.bn.running_mean[chosen] = 0.0
                module.bn.running_var[chosen] = 0.0
            module.bn.bias[chosen] = 0.0
            silenced[index] = set(chosen.tolist())
    return silenced


# -- the channel graph ---------------------------------------------------------------------------------------


def test_residual_sides_and_head_outputs_are_locked_inner_convs_are_prunable() -> None:
    model = build("yolov3_test")
    assert isinstance(model, YOLOv3)
    graph = analyze_channels(model)
    prunable = {id(graph.modules[index]) for index in graph.prunable}
    backbone = model.backbone
    for stage in backbone.stages:
        downsample, *blocks = stage
        assert id(downsample) not in prunable  # the residual stream starts here
        for block in blocks:
            assert id(block.reduce) in prunable and id(block.expand) not in prunable
    assert id(backbone.stem) in prunable
    for block in model.blocks:
        assert id(block.output) not in prunable
        assert all(id(conv) in prunable for conv in (*block.convs, block.head))
    assert all(id(lateral) in prunable for lateral in model.laterals)
    reasons = set(graph.locked.values())
    assert any(reason.startswith("adds into [shortcut]") for reason in reasons)
    assert any(reason.startswith("feeds [yolo]") for reason in reasons)


def test_channel_importance_is_the_filter_l1_norm_or_the_gamma_magnitude() -> None:
    model = build("yolov3_tiny_test")
    graph = analyze_channels(model)
    l1, gamma = channel_importance(model, "l1"), channel_importance(model, "bn_gamma")
    assert set(l1) == set(gamma) == set(graph.prunable)
    for index in graph.prunable:
        module = graph.modules[index]
        weight = module.conv.weight.detach()
        expected = torch.tensor([weight[f].abs().sum().item() for f in range(weight.shape[0])])
        torch.testing.assert_close(l1[index], expected)
        torch.testing.assert_close(gamma[index], module.bn.weight.detach().abs())
    with pytest.raises(ValueError, match="unknown criterion 'l2'"):
        channel_importance(model, "l2")


# -- valid smaller networks ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["yolov3_test", "yolov3_tiny_test"])
def test_pruning_removes_the_requested_count_and_keeps_the_heads(name: str) -> None:
    model = build(name)
    before = filters_by_layer(model)
    plan = plan_pruning(model, 0.3, criterion="l1")
    assert plan.removed == round(0.3 * plan.prunable_channels)
    pruned = apply_plan(model, plan)
    after = filters_by_layer(pruned)
    prunable = set(analyze_channels(model).prunable)
    assert sum(before[i] - after[i] for i in prunable) == plan.removed
    assert all(after[i] == before[i] for i in before if i not in prunable)  # locked convs, heads included
    assert len({after[i] / before[i] for i in prunable}) > 1  # channel counts differ per layer
    assert flops(pruned, 416) < flops(model, 416)
    for height, width in INPUT_SIZES:
        expected, got = outputs_of(model, height, width), outputs_of(pruned, height, width)
        assert [o.shape for o in got] == [o.shape for o in expected]
    assert isinstance(pruned, Darknet) and pruned.head_specs == model.head_specs


@pytest.mark.parametrize(
    ("name", "options", "criterion"),
    [
        ("yolov3_test", {}, "bn_gamma"),
        ("yolov3_test", {"spp": True}, "l1"),
        ("yolov3_tiny_test", {}, "l1"),
        ("yolov3_tiny_test", {}, "bn_gamma"),
        ("darknet53_test", {}, "bn_gamma"),
    ],
)
def test_removing_silent_channels_gives_the_same_outputs(name: str, options: dict, criterion: str) -> None:
    """Channels that output exactly 0 are removed; any slip in route offsets or shortcuts would change outputs."""
    model = build(name, **options)
    silenced = silence_channels(model, 0.4, criterion)
    removed = sum(len(channels) for channels in silenced.values())
    graph = analyze_channels(model)
    plan = plan_pruning(model, removed / sum(graph.modules[i].conv.out_channels for i in silenced), criterion=criterion)
    assert plan.removed == removed
    for index, channels in silenced.items():
        assert set(plan.keep[index].tolist()).isdisjoint(channels)
    pruned = apply_plan(model, plan)
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())
    for height, width in INPUT_SIZES:
        for got, expected in zip(outputs_of(pruned, height, width), outputs_of(model, height, width), strict=True):
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


TWO_BRANCH_CFG = """
[net]
width=32
height=32
channels=3

[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=leaky

[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=leaky

[convolutional]
batch_normalize=1
filters=6
size=1
stride=1
pad=1
activation=logistic

[route]
layers=-1,-2

[convolutional]
filters=18
size=1
stride=1
pad=1
activation=linear

[yolo]
mask=0,1,2
anchors=4,5,8,9,12,13
classes=1
num=3
"""


def test_removed_channels_constant_output_is_folded_into_their_readers() -> None:
    """gamma = 0 with beta != 0: the channel outputs the constant act(beta); folding it keeps 1x1 readers exact."""
    torch.manual_seed(3)
    model = Darknet(parse_cfg_text(TWO_BRANCH_CFG))
    with torch.no_grad():
        for layer in model.layers:
            if isinstance(getattr(layer, "bn", None), nn.BatchNorm2d):
                layer.bn.weight.uniform_(0.5, 1.5)
                layer.bn.bias.uniform_(-1.0, 1.0)
                layer.bn.running_mean.uniform_(-0.3, 0.3)
        model.layers[1].bn.weight[[1, 4, 6]] = 0.0  # read by a 1x1 conv and, through the route, the output conv
        model.layers[2].bn.weight[[0, 3]] = 0.0  # logistic: act(beta) is far from zero
    model.eval()
    plan = plan_pruning(model, 5 / 22, criterion="bn_gamma")
    assert {index: len(keep) for index, keep in plan.keep.items()} == {0: 8, 1: 5, 2: 4}
    expected = outputs_of(model, 32, 32)[0]
    torch.testing.assert_close(outputs_of(apply_plan(model, plan), 32, 32)[0], expected, rtol=1e-5, atol=1e-5)
    dropped = outputs_of(apply_plan(model, plan, absorb_removed=False), 32, 32)[0]
    assert (dropped - expected).abs().max() > 1e-2  # without folding, the constants are lost
    # Removing filters of layer 0, read by a 3x3 conv: exact except the one-pixel border (zero padding there).
    with torch.no_grad():
        model.layers[0].bn.weight[[2, 5]] = 0.0
    plan = plan_pruning(model, 7 / 22, criterion="bn_gamma")
    assert len(plan.keep[0]) == 6
    got, expected = outputs_of(apply_plan(model, plan), 32, 32)[0], outputs_of(model, 32, 32)[0]
    torch.testing.assert_close(got[..., 1:-1, 1:-1], expected[..., 1:-1, 1:-1], rtol=1e-5, atol=1e-5)


def test_expected_channel_output_is_the_gaussian_mean_of_the_activation() -> None:
    """E[leaky(y)] for y ~ N(b, s^2) in closed form: 0.1 b + 0.9 (b Phi(b / s) + s phi(b / s))."""
    module = ConvBNAct(2, 4, 1)
    with torch.no_grad():
        module.bn.weight.copy_(torch.tensor([0.0, 1.0, -2.0, 0.5]))
        module.bn.bias.copy_(torch.tensor([0.7, 0.3, -0.4, 1.0]))
        module.bn.running_var.copy_(torch.tensor([1.0, 4.0, 1.0, 0.0]))  # the last: an all-zero filter
    spread = module.bn.weight.abs() * torch.sqrt(module.bn.running_var / (module.bn.running_var + module.bn.eps))
    normal = torch.distributions.Normal(0.0, 1.0)
    beta = module.bn.bias.detach()
    z = beta / spread.clamp_min(1e-12)
    closed = 0.1 * beta + 0.9 * (beta * normal.cdf(z) + spread * normal.log_prob(z).exp())
    closed = torch.where(spread > 0, closed, torch.nn.functional.leaky_relu(beta, 0.1))
    torch.testing.assert_close(expected_channel_outputs(module), closed.detach(), rtol=1e-4, atol=1e-5)


def test_flops_target_and_channel_multiple() -> None:
    model = build("yolov3_test")
    original = flops(model, 256)
    pruned = prune_channels(model, flops_target=0.5, criterion="l1")
    assert 0.45 * original <= flops(pruned, 256) <= 0.5 * original
    rounded = prune_channels(model, flops_target=0.6, channel_multiple=2)
    before, after = filters_by_layer(model), filters_by_layer(rounded)
    assert flops(rounded, 256) <= 0.6 * original
    assert all(after[i] % 2 == 0 or after[i] == before[i] for i in analyze_channels(model).prunable)


def test_bad_requests_are_errors() -> None:
    model = build("yolov3_tiny_test")
    with pytest.raises(ValueError, match="exactly one of ratio"):
        prune_channels(model, 0.3, flops_target=0.5)
    with pytest.raises(ValueError, match="exactly one of ratio"):
        prune_channels(model)
    with pytest.raises(ValueError, match=r"at most .* can go"):
        prune_channels(model, 0.95)
    with pytest.raises(ValueError, match="cannot reach 1% of the FLOPs"):
        prune_channels(model, flops_target=0.01)
    with pytest.raises(NotImplementedError, match="no Darknet cfg form"):
        prune_channels(create_model("yolov3_mobilenet_v3_small"), 0.3)


# -- Darknet files and fine-tuning ---------------------------------------------------------------------------


def test_pruned_model_saves_as_darknet_cfg_and_weights_and_loads_back(tmp_path: Path) -> None:
    pruned = prune_channels(build("yolov3_test"), 0.4, criterion="l1")
    cfg_path, weights_path = tmp_path / "pruned.cfg", tmp_path / "pruned.weights"
    pruned.save_darknet_cfg(cfg_path, header="pruned yolov3_test")
    pruned.save_darknet_weights(weights_path)
    cfg = parse_cfg(cfg_path)  # the strict parser
    assert format_cfg(cfg, header="pruned yolov3_test") == cfg_path.read_text()
    floats = sum(p.numel() for p in pruned.parameters()) + sum(
        layer.bn.running_mean.numel() * 2 for layer in pruned.layers if getattr(layer, "bn", None) is not None
    )
    assert weights_path.stat().st_size == 20 + 4 * floats  # header, then float32 only: no pickle
    loaded = Darknet(cfg_path)
    loaded.load_darknet_weights(weights_path)
    loaded.eval()
    for height, width in INPUT_SIZES[:2]:
        expected = outputs_of(pruned, height, width)
        assert all(torch.equal(a, b) for a, b in zip(outputs_of(loaded, height, width), expected, strict=True))
    builder = darknet_cfg(num_classes=3, cfg=cfg_path, weights=weights_path).eval()
    assert builder.head_specs == pruned.head_specs
    assert torch.equal(outputs_of(builder, 64, 64)[0], outputs_of(pruned, 64, 64)[0])
    with pytest.raises(ValueError, match="classes=\\[3\\], but num_classes=5"):
        darknet_cfg(num_classes=5, cfg=cfg_path)


@pytest.mark.slow
def test_slimming_training_then_pruning_then_fine_tuning_the_cfg_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sparsity training with the callback, prune by gamma, save, fine-tune as ``darknet_cfg``, rebuild."""
    config = load_train_config(write_config(tmp_path, **{"train.epochs": 1}))
    slimming = SlimmingCallback(strength=1e-3)
    trainer = build_trainer(config, tmp_path / "slim", progress=False, callbacks=[slimming])
    trainer.fit()
    assert slimming.penalty.attached
    assert len(slimming.penalty.scales) == len(analyze_channels(trainer.model).prunable)
    assert {"slimming/gamma_mean", "slimming/gamma_small_fraction"} <= set(trainer.history[-1])
    pruned = prune_channels(trainer.model.eval(), 0.3, criterion="bn_gamma")
    pruned.save_darknet_cfg(tmp_path / "pruned.cfg")
    pruned.save_darknet_weights(tmp_path / "pruned.weights")

    options = {"cfg": str(tmp_path / "pruned.cfg"), "weights": str(tmp_path / "pruned.weights")}
    overrides = {"train.epochs": 1, "model.name": "darknet_cfg", "model.options": options}
    path = write_config(tmp_path, "finetune.yaml", **overrides, **{"logging.run_name": "finetune"})
    result = build_trainer(load_train_config(path), tmp_path / "finetune", progress=False).fit()
    assert result.epochs_completed == 1
    rebuilt = model_from_checkpoint(load_checkpoint(tmp_path / "finetune" / "last.pt"))
    assert isinstance(rebuilt, Darknet) and filters_by_layer(rebuilt) == filters_by_layer(pruned)


# -- network slimming ----------------------------------------------------------------------------------------


def test_slimming_penalty_adds_strength_times_sign_gamma_to_the_gradient() -> None:
    model = build("yolov3_tiny_test")
    scales = slimming_scales(model)
    assert len(scales) == len(analyze_channels(model).prunable)
    with torch.no_grad():
        scales[0][0] = 0.0  # sign(0) = 0: no push
        scales[1][:] *= -1.0  # negative gammas are pushed up
    image = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))

    def gradients(penalty: SlimmingPenalty | None) -> list[torch.Tensor]:
        model.zero_grad(set_to_none=True)
        if penalty is not None:
            penalty.attach()
        sum(output.square().mean() for output in model(image)).backward()
        if penalty is not None:
            penalty.detach()
        return [gamma.grad.clone() for gamma in scales]

    plain = gradients(None)
    penalized = gradients(SlimmingPenalty(scales, 0.01, gradient_scale=lambda: 3.0))
    for gamma, without, with_penalty in zip(scales, plain, penalized, strict=True):
        hand = torch.tensor([0.03 if value > 0 else -0.03 if value < 0 else 0.0 for value in gamma.tolist()])
        torch.testing.assert_close(with_penalty - without, hand, rtol=0, atol=1e-6)
    assert penalized[0][0] == plain[0][0] and (penalized[1] - plain[1] < 0).all()
    assert gradients(None)[0].equal(plain[0])  # detached: no penalty any more


def test_slimming_in_the_step_runner_is_one_penalty_per_step_whatever_the_accumulation() -> None:
    base = build("yolov3_tiny_test").train()
    images, targets = random_batch(4, torch.Generator().manual_seed(1))
    learning_rate, strength = 0.1, 0.05
    results = []
    for use_penalty in (False, True):
        model = copy.deepcopy(base)
        optimizer = torch.optim.SGD(model.parameters(), lr=learning_rate)
        runner = StepRunner(model, YoloLoss(model.head_specs), optimizer, accumulate=2)
        scales = slimming_scales(model)
        if use_penalty:
            SlimmingPenalty(scales, strength, runner_gradient_scale(runner)).attach()
        before = [gamma.detach().clone() for gamma in scales]
        for start in (0, 2):
            chunk = targets[(targets[:, 0] >= start) & (targets[:, 0] < start + 2)].clone()
            chunk[:, 0] -= start
            runner.micro_step(images[start : start + 2], chunk)
        assert runner.optimizer_steps == 1
        results.append([gamma.detach() - old for gamma, old in zip(scales, before, strict=True)])
    for plain, penalized, gamma in zip(*results, slimming_scales(base), strict=True):
        torch.testing.assert_close(penalized - plain, -learning_rate * strength * torch.sign(gamma), rtol=0, atol=1e-6)


# -- the benchmark script ------------------------------------------------------------------------------------


def test_speed_benchmark_runs_and_records_only_its_own_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location("structured_speed", PROJECT_ROOT / "bench" / "structured_speed.py")
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, bench)  # dataclasses look their module up there
    spec.loader.exec_module(bench)
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n\n## Other (issue 1)\n\nkept as it is\n")
    arguments = ["--models", "yolov3-tiny", "--size", "64", "--repeats", "10", "--warmup", "1", "--threads", "1"]
    assert bench.main([*arguments, "--record", "--docs", str(docs)]) == 0
    text = docs.read_text()
    assert text.startswith("# Benchmarks\n\n## Other (issue 1)\n\nkept as it is\n\n## Compression: structured pruning")
    assert "| yolov3-tiny | original | 0.13 | 8,852,366 |" in text and "| yolov3-tiny | pruned |" in text


@pytest.mark.slow
def test_prune_cli_structured_saves_darknet_files_and_fine_tunes(tmp_path: Path) -> None:
    from yolov3.cli import prune as prune_cli

    path = write_config(tmp_path, **{"train.epochs": 1, "train.ema": False})
    build_trainer(load_train_config(path), tmp_path / "dense", progress=False).fit()
    # The run's config as a fine-tuned run keeps it: starting from pretrained weights of the dense model, which
    # the pruned model's fine-tuning must not load
    dense = tmp_path / "dense" / "best.pt"
    path = write_config(tmp_path, **{"train.epochs": 1, "train.ema": False, "model.weights": str(dense)})
    out = tmp_path / "structured"
    arguments = ["structured", "--cfg", str(path), "--weights", str(dense)]
    options = ["--flops-target", "0.5", "--channel-multiple", "3", "--finetune-epochs", "1", "--out", str(out)]
    assert prune_cli.main([*arguments, *options]) == 0
    pruned = Darknet(out / "pruned.cfg")
    pruned.load_darknet_weights(out / "finetuned.weights")  # strict float count: the fine-tuned cfg model
    dense = create_model("yolov3_tiny_test", num_classes=3).to_darknet_cfg()
    dense_widths = [section.filters for section in dense.layers if isinstance(section, ConvolutionalSection)]
    widths = [section.filters for section in pruned.cfg.layers if isinstance(section, ConvolutionalSection)]
    assert all(width % 3 == 0 or width == dense for width, dense in zip(widths, dense_widths, strict=True))
    assert widths != dense_widths
    dense_flops = flops(create_model("yolov3_tiny_test", num_classes=3), (64, 64))
    assert flops(pruned, (64, 64)) <= 0.5 * dense_flops + 1e-9
    assert "| pruned |" in (out / "structured.md").read_text()
    resolved = load_train_config(out / "finetune" / "args.yaml")  # repeats the fine-tuning, or feeds export --qat
    assert resolved.model.name == "darknet_cfg" and resolved.model.weights is None
    assert resolved.model.options == {"cfg": str(out / "pruned.cfg"), "weights": str(out / "pruned.weights")}


@pytest.mark.slow
def test_prune_cli_structured_slims_prunes_by_gamma_and_resumes_after_kills(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from yolov3.cli import prune as prune_cli
    from yolov3.train.trainer import Trainer

    path = write_config(tmp_path, **{"train.epochs": 1, "train.ema": False})
    build_trainer(load_train_config(path), tmp_path / "dense", progress=False).fit()
    dense = tmp_path / "dense" / "best.pt"

    def structured(out: Path, *extra: str, strength: str = "2") -> int:
        return prune_cli.main(["structured", "--cfg", str(path), "--weights", str(dense), "--flops-target", "0.5",
                               "--slimming-epochs", "2", "--slimming-strength", strength, "--finetune-epochs", "2",
                               "--no-progress", "--out", str(out), *extra])  # fmt: skip

    straight = tmp_path / "straight"
    assert structured(straight) == 0

    # The penalty shrank the prunable scales; the pruned file is the slimmed model pruned by |gamma|.
    slimmed = model_from_checkpoint(load_checkpoint(straight / "slimming" / "last.pt")).eval()
    before = model_from_checkpoint(load_checkpoint(dense)).eval()
    mean_gamma = [float(torch.cat([g.detach().abs() for g in slimming_scales(m)]).mean()) for m in (before, slimmed)]
    assert mean_gamma[1] < 0.97 * mean_gamma[0]  # 8 SGD steps at lr <= 0.01 (cosine) of strength 2
    by_gamma = prune_channels(slimmed, flops_target=0.5, criterion="bn_gamma")
    by_gamma.save_darknet_weights(tmp_path / "by_gamma.weights")
    assert (straight / "pruned.weights").read_bytes() == (tmp_path / "by_gamma.weights").read_bytes()
    assert "| dense, slimmed |" in (straight / "structured.md").read_text()

    # Killed in the slimming's second epoch, then in the fine-tuning's second: each --resume continues.
    original, calls = Trainer._train_epoch, {"count": 0, "kill_at": 2}

    class KilledError(Exception):
        pass

    def killed(self, epoch):
        calls["count"] += 1
        if calls["count"] == calls["kill_at"]:
            raise KilledError
        return original(self, epoch)

    monkeypatch.setattr(Trainer, "_train_epoch", killed)
    resumed = tmp_path / "resumed"
    with pytest.raises(KilledError):
        structured(resumed)
    calls.update(count=0, kill_at=3)  # slimming epoch 2, fine-tuning epoch 1, killed in fine-tuning epoch 2
    with pytest.raises(KilledError):
        structured(resumed, "--resume")
    assert (resumed / "finetune" / "last.pt").is_file()
    calls.update(count=0, kill_at=0)
    assert structured(resumed, "--resume") == 0
    assert calls["count"] == 1  # only the fine-tuning's second epoch ran
    assert (resumed / "pruned.weights").read_bytes() == (straight / "pruned.weights").read_bytes()
    finetuned = [np.fromfile(folder / "finetuned.weights", dtype=np.float32) for folder in (straight, resumed)]
    np.testing.assert_allclose(finetuned[1], finetuned[0], rtol=0, atol=1e-6)

    assert structured(resumed, "--resume", strength="1") != 0
    assert "slimming_strength: 2.0, now 1.0); resume with the same ones" in capsys.readouterr().err
