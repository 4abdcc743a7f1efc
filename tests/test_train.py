"""The trainer: accumulation equals a big batch, resume equals an uninterrupted run, NaN guard, config, CLI."""

from __future__ import annotations

import copy
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from yolov3 import lr as lr_cli
from yolov3.checkpoint import load_checkpoint
from yolov3.cli import train as cli
from yolov3.config_loading import to_dict
from yolov3.hardware import resolve_amp
from yolov3.loss.yolo_loss import LossOutput, YoloLoss
from yolov3.models import create_model
from yolov3.train.builder import build_trainer
from yolov3.train.config import load_train_config
from yolov3.train.memory_format import to_channels_last
from yolov3.train.optimizer import OptimizerConfig, build_optimizer
from yolov3.train.step import StepRunner
from yolov3.train.trainer import Trainer


def tiny_config(tmp_path: Path, **overrides: object) -> dict:
    """A training config small enough to run in seconds: 16 + 8 synthetic images, yolov3_tiny_test."""
    config = {
        "data": {
            "dataset": {
                "format": "synthetic",
                "root": str(tmp_path / "shapes"),
                "synthetic": {"num_train": 16, "num_val": 8, "image_size": [96, 96], "max_objects": 2, "seed": 3},
            },
            "image_size": 64,
            "batch_size": 4,
            "workers": 0,
            "augment": {"mosaic": {"probability": 0.5}},
        },
        "model": {"name": "yolov3_tiny_test"},
        "optimizer": {"name": "sgd", "learning_rate": 0.01},
        "schedule": {"policy": "cosine", "warmup": "linear", "warmup_steps": 2},
        "train": {"epochs": 2, "ema": True},
        "logging": {
            "log_dir": str(tmp_path / "logs"),
            "run_name": "run",
            "images_every_epochs": 1,
            "histograms_every_epochs": 1,
        },
    }
    for dotted, value in overrides.items():
        node = config
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return config


def write_config(tmp_path: Path, name: str = "tiny.yaml", **overrides: object) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(tiny_config(tmp_path, **overrides)))
    return path


def random_batch(count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.rand(count, 3, 64, 64, generator=generator)
    boxes = torch.rand(count, 4, generator=generator) * 0.3 + 0.2
    targets = torch.cat(
        [torch.arange(count).float()[:, None], torch.randint(0, 3, (count, 1), generator=generator).float(), boxes], 1
    )
    return images, targets


def test_eight_micro_batches_of_eight_equal_one_batch_of_sixty_four() -> None:
    torch.manual_seed(0)
    base = create_model("yolov3_tiny_test", num_classes=3)
    base.eval()  # batch-norm statistics frozen: batch statistics differ by design
    images, targets = random_batch(64, torch.Generator().manual_seed(1))
    results = []
    for accumulate in (1, 8):
        model = copy.deepcopy(base)
        optimizer = build_optimizer(model, OptimizerConfig(name="sgd", learning_rate=0.05, weight_decay=0.01))
        runner = StepRunner(model, YoloLoss(model.head_specs), optimizer, accumulate=accumulate, grad_clip_norm=5.0)
        micro = 64 // accumulate
        for start in range(0, 64, micro):
            chunk = targets[(targets[:, 0] >= start) & (targets[:, 0] < start + micro)].clone()
            chunk[:, 0] -= start
            runner.micro_step(images[start : start + micro], chunk)
        assert runner.optimizer_steps == 1
        results.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    moved = (results[0] - torch.cat([p.detach().flatten() for p in base.parameters()])).abs().max()
    assert moved > 1e-4  # the step really changed the weights
    torch.testing.assert_close(results[1], results[0], rtol=1e-5, atol=1e-6)


class NanOnSecondCall(YoloLoss):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.calls = 0

    def forward(self, outputs, targets, input_size) -> LossOutput:
        self.calls += 1
        loss = super().forward(outputs, targets, input_size)
        if self.calls == 2:
            nan = torch.tensor(float("nan"))
            return LossOutput(loss.total * nan, loss.box, loss.obj * nan, loss.cls, loss.num_assigned)
        return loss


@pytest.mark.parametrize(("amp", "channels_last"), [("none", False), ("bf16", True)])
def test_nan_loss_drops_the_step_and_keeps_weights(
    caplog: pytest.LogCaptureFixture, amp: str, channels_last: bool
) -> None:
    torch.manual_seed(0)
    model = create_model("yolov3_tiny_test", num_classes=3)
    if channels_last:
        to_channels_last(model)
    optimizer = build_optimizer(model, OptimizerConfig(name="sgd", learning_rate=0.05))
    runner = StepRunner(model, NanOnSecondCall(model.head_specs), optimizer, accumulate=2, amp=amp)
    images, targets = random_batch(4, torch.Generator().manual_seed(2))
    runner.micro_step(images[:2], targets[targets[:, 0] < 2])
    before = copy.deepcopy(model.state_dict())  # weights and batch-norm statistics
    with caplog.at_level(logging.ERROR):
        result = runner.micro_step(images[2:], targets[:0], where="at epoch 3, batch 7")
    assert result.dropped and not result.stepped and runner.optimizer_steps == 0
    assert "non-finite loss (obj=nan) at epoch 3, batch 7" in caplog.text
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert all(p.grad is None for p in model.parameters())  # the first micro-batch's gradients are dropped too
    assert not optimizer.state  # no momentum buffer was created from the bad window
    runner.micro_step(images[:2], targets[targets[:, 0] < 2])
    result = runner.micro_step(images[2:], targets[targets[:, 0] >= 2] - torch.tensor([2.0, 0, 0, 0, 0, 0]))
    assert result.stepped and all(torch.isfinite(p).all() for p in model.parameters())


def test_trainer_logs_the_convolutions_kept_nchw(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = load_train_config(write_config(tmp_path, **{"train.epochs": 1, "train.channels_last": True}))
    with caplog.at_level(logging.INFO, logger="yolov3.train.trainer"):
        trainer = build_trainer(config, tmp_path / "run", progress=False)
    convolutions = [(name, m) for name, m in trainer.model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    narrow = [name for name, module in convolutions if module.out_channels < 16]
    assert trainer.nchw_layers == narrow and narrow
    assert f"convolution(s) under 16 channels stay NCHW: {', '.join(narrow)}" in caplog.text


@pytest.mark.slow
@pytest.mark.parametrize(("amp", "channels_last"), [("none", False), ("bf16", True)])
def test_resume_reaches_the_same_weights_as_an_uninterrupted_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, amp: str, channels_last: bool
) -> None:
    overrides = {"train.epochs": 3, "train.amp": amp, "train.channels_last": channels_last}
    config = load_train_config(write_config(tmp_path, **overrides))
    straight = build_trainer(config, tmp_path / "straight", progress=False)
    straight.fit()

    class KilledError(Exception):
        pass

    original = Trainer._train_epoch

    def killed_in_epoch_three(self, epoch):
        if epoch == 2:
            raise KilledError
        return original(self, epoch)

    monkeypatch.setattr(Trainer, "_train_epoch", killed_in_epoch_three)
    with pytest.raises(KilledError):
        build_trainer(config, tmp_path / "resumed", progress=False).fit()
    assert load_checkpoint(tmp_path / "resumed" / "last.pt").epoch == 1
    monkeypatch.setattr(Trainer, "_train_epoch", original)
    build_trainer(config, tmp_path / "resumed", resume=True, progress=False).fit()

    expected = load_checkpoint(tmp_path / "straight" / "last.pt")
    resumed = load_checkpoint(tmp_path / "resumed" / "last.pt")
    assert resumed.epoch == expected.epoch == 2
    for key in ("model_state", "ema_state"):
        for name, value in getattr(expected, key).items():
            torch.testing.assert_close(getattr(resumed, key)[name], value, rtol=0, atol=1e-6, msg=f"{key}.{name}")
    assert resumed.best_map50 == pytest.approx(expected.best_map50)


@pytest.mark.slow
def test_cli_trains_saves_args_and_checkpoints(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path, **{"train.epochs": 1, "train.accumulate": 2})
    assert cli.main(["--cfg", str(path), "--set", "optimizer.name=adam", "--no-progress"]) == 0
    run = tmp_path / "logs" / "run"
    assert {"args.yaml", "last.pt", "best.pt"} <= {p.name for p in run.iterdir()}
    assert any(p.name.startswith("events.out.tfevents") for p in run.iterdir())
    repeated = load_train_config(run / "args.yaml")  # --cfg logs/<run>/args.yaml repeats the run
    assert to_dict(repeated) == to_dict(load_train_config(path, ["optimizer.name=adam"]))
    assert repeated.optimizer.name == "adam" and repeated.train.accumulate == 2
    choice = resolve_amp("auto", "cpu")  # args.yaml says what amp: auto chose on this machine, and why
    assert (run / "args.yaml").read_text().splitlines()[
        0
    ] == f"# train.amp: auto -> {choice.mode} on cpu ({choice.reason})"
    checkpoint = load_checkpoint(run / "best.pt")
    assert checkpoint.amp == {"mode": choice.mode, "reason": choice.reason}
    assert checkpoint.class_names == ("circle", "square", "triangle")
    assert checkpoint.model.to_dict() == {"name": "yolov3_tiny_test", "kwargs": {"num_classes": 3}}
    assert "best mAP@0.5" in capsys.readouterr().out


def test_cli_config_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path)
    assert cli.main(["--cfg", str(path), "--set", "optimizer.lr=0.1"]) == 2
    assert "unknown key 'optimizer.lr'" in capsys.readouterr().err
    assert cli.main(["--cfg", str(path), "--set", "train.epoch=3"]) == 2
    assert "(did you mean 'train.epochs'?)" in capsys.readouterr().err
    assert cli.main(["--cfg", str(path), "--set", "model.num_classes=5"]) == 2
    assert "model.num_classes is 5 but the dataset has 3 class names" in capsys.readouterr().err


@pytest.mark.slow
def test_ddp_with_two_gloo_processes(tmp_path: Path) -> None:
    """torchrun, 2 CPU processes (gloo): trains, only rank 0 writes logs and checkpoints."""
    path = write_config(tmp_path, **{"train.epochs": 2})
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "yolov3.train", "--cfg", str(path), "--no-progress",
    ]  # fmt: skip
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=environment, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "logs" / "run"
    writers = {
        path.name.split(".")[-2] for path in run.glob("events.out.tfevents*")
    }  # ...tfevents.<time>.<host>.<pid>.<n>
    assert len(writers) == 1  # one process wrote TensorBoard events: rank 0
    checkpoint = load_checkpoint(run / "last.pt")
    assert checkpoint.epoch == 1
    # 16 images over 2 ranks with batch 4: 2 optimizer steps per epoch on each rank
    assert checkpoint.runner["optimizer_steps"] == 4
    assert result.stdout.count("best mAP@0.5") == 1


@pytest.mark.slow
def test_overfit_mode_learns_its_batches(tmp_path: Path) -> None:
    config = load_train_config(
        write_config(tmp_path),
        [
            "train.overfit_batches=1",
            "train.epochs=60",
            "train.ema=false",
            "eval.every_epochs=60",
            "optimizer.name=adam",
            "optimizer.learning_rate=0.01",
            "schedule.policy=constant",
            "model.options={width_multiple: 0.125, bn_momentum: 0.1}",
            "logging.images_every_epochs=0",
            "logging.histograms_every_epochs=0",
        ],
    )
    result = build_trainer(config, tmp_path / "overfit", progress=False).fit()
    # The output convs start from priors, so the first loss is already small (about 13, not hundreds)
    assert result.history[0]["train/loss"] > 4 * result.history[-1]["train/loss"]
    assert result.last_map50 >= 0.8


def test_lr_cli_plots_the_schedule(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path, **{"train.epochs": 10})
    output = tmp_path / "lr.png"
    assert lr_cli.main(["--cfg", str(path), "--steps-per-epoch", "5", "--out", str(output)]) == 0
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "50 steps, peak 0.01" in capsys.readouterr().out
    assert lr_cli.main(["--cfg", str(path), "--set", "schedule.polcy=cosine", "--out", str(output)]) == 2
    assert "did you mean 'schedule.policy'" in capsys.readouterr().err
