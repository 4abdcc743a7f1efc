"""``python -m yolov3.compress`` end to end on a tiny model: prune, fine-tune, share, encode, decode."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import pytest
import torch
from test_train import write_config

from yolov3.checkpoint import Checkpoint, ModelSpec, load_checkpoint, model_from_checkpoint, save_checkpoint
from yolov3.cli import compress
from yolov3.compression.sharing import conv_layers
from yolov3.compression.storage import load_compressed
from yolov3.models import create_model
from yolov3.train.trainer import Trainer

CLASS_NAMES = ("circle", "square", "triangle")


def tiny_checkpoint(path: Path) -> Path:
    """A ``best.pt`` as the trainer writes it, for yolov3_tiny_test on the synthetic shapes (untrained)."""
    torch.manual_seed(0)
    model = create_model("yolov3_tiny_test", num_classes=3)
    save_checkpoint(path, Checkpoint(
        model=ModelSpec("yolov3_tiny_test", {"num_classes": 3}), model_state=model.state_dict(),
        ema_state=None, class_names=CLASS_NAMES, input_size=(64, 64),
        preprocessing={"letterbox": True, "fill": 0.5}, normalization="darknet",
    ))  # fmt: skip
    return path


@pytest.mark.slow
def test_compress_end_to_end_then_decode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, **{"logging.images_every_epochs": 0, "logging.histograms_every_epochs": 0})
    weights, output, run_dir = tiny_checkpoint(tmp_path / "best.pt"), tmp_path / "model.yolov3c", tmp_path / "run"
    arguments = ["--weights", str(weights), "--cfg", str(config), "--sparsity", "0.8", "--bits", "4",
                 "--finetune-epochs", "1", "--out", str(output), "--run-dir", str(run_dir)]  # fmt: skip
    assert compress.main([*arguments, "--no-progress"]) == 0
    printed = capsys.readouterr().out
    stages = ("dense", "pruned", "pruned, fine-tuned", "shared (k=16)", "shared, centroids fine-tuned",
              "file (float16, decoded)")  # fmt: skip
    for stage in stages:
        assert f"| {stage} |" in printed, stage
    assert "total of 10 shared layers" in printed  # 13 convs; the first and the 2 head outputs stay unshared
    assert "smaller than fp32 .weights" in printed
    assert any(path.name.startswith("events.out.tfevents") for path in run_dir.iterdir())
    assert {"finetune_pruned", "finetune_shared"} <= {path.name for path in run_dir.iterdir()}

    stored = load_compressed(output)
    assert stored.metadata["class_names"] == list(CLASS_NAMES)
    for name, conv in conv_layers(stored.model):
        values = conv.weight[conv.weight != 0]
        assert len(torch.unique(values)) <= (16 if name in stored.shared.layers else values.numel())
    pruned = [conv for name, conv in conv_layers(stored.model) if name not in ("stride16.0.conv",)]
    pruned = [conv for conv in pruned if conv.bias is None]  # the heads' outputs (with a bias) are not pruned
    zeros = sum(int((conv.weight == 0).sum()) for conv in pruned)
    assert zeros / sum(conv.weight.numel() for conv in pruned) >= 0.8 - 1e-3

    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = stored.model(images)
    checkpoint_path, darknet_path = tmp_path / "decoded.pt", tmp_path / "decoded.weights"
    assert compress.main(["decode", str(output), "--out", str(checkpoint_path), "--darknet", str(darknet_path)]) == 0
    checkpoint = load_checkpoint(checkpoint_path)
    assert checkpoint.class_names == CLASS_NAMES and checkpoint.input_size == (64, 64)
    from_darknet = create_model("yolov3_tiny_test", num_classes=3).eval()
    from_darknet.load_darknet_weights(darknet_path)
    for model in (model_from_checkpoint(checkpoint).eval(), from_darknet):
        with torch.no_grad():
            assert all(torch.equal(a, b) for a, b in zip(model(images), expected, strict=True))

    assert compress.main(["inspect", str(output)]) == 0
    assert "total of 10 shared layers" in capsys.readouterr().out


def test_cli_errors_name_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    garbage = tmp_path / "garbage.yolov3c"
    garbage.write_bytes(b"not a model at all" * 10)
    assert compress.main(["decode", str(garbage), "--out", str(tmp_path / "x.pt")]) == 2
    assert f"{garbage}: not a yolov3 compressed model file" in capsys.readouterr().err
    config = write_config(tmp_path, **{"model.name": "yolov3_test"})
    weights = tiny_checkpoint(tmp_path / "best.pt")
    assert compress.main(["--weights", str(weights), "--cfg", str(config), "--out", str(tmp_path / "m.yolov3c")]) == 2
    assert "a yolov3_tiny_test model, but the config trains yolov3_test" in capsys.readouterr().err
    config = write_config(tmp_path, "other.yaml", **{"model.options": {"width_multiple": 0.125}})
    assert compress.main(["--weights", str(weights), "--cfg", str(config), "--out", str(tmp_path / "m.yolov3c")]) == 2
    assert "was trained as" in capsys.readouterr().err


@pytest.mark.slow
def test_a_killed_compress_resumes_to_the_file_of_an_uninterrupted_run(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="yolov3.compress")
    caplog.set_level(logging.INFO, logger="yolov3.compression.pipelines")  # where the fine-tuning runs log
    config = write_config(tmp_path, **{"logging.images_every_epochs": 0, "logging.histograms_every_epochs": 0})
    weights = tiny_checkpoint(tmp_path / "best.pt")

    def arguments(name: str) -> list[str]:
        return ["--weights", str(weights), "--cfg", str(config), "--sparsity", "0.5", "--bits", "3",
                "--finetune-epochs", "2", "--out", str(tmp_path / f"{name}.yolov3c"), "--run-dir", str(tmp_path / name),
                "--no-progress"]  # fmt: skip

    assert compress.main(arguments("straight")) == 0
    # SIGINT during the second epoch of each fine-tuning: it stops after that optimizer step, last.pt holds epoch 1.
    train_epoch, interrupted = Trainer._train_epoch, set()

    def train_epoch_then_interrupt(trainer: Trainer, epoch: int) -> dict[str, float]:
        if epoch == 1 and trainer.run_dir.name not in interrupted:
            interrupted.add(trainer.run_dir.name)
            os.kill(os.getpid(), signal.SIGINT)
        return train_epoch(trainer, epoch)

    monkeypatch.setattr(Trainer, "_train_epoch", train_epoch_then_interrupt)
    assert compress.main(arguments("killed")) == 128 + signal.SIGINT
    assert f"--run-dir {tmp_path / 'killed'} --resume" in capsys.readouterr().err
    assert interrupted == {"finetune_pruned"} and not (tmp_path / "killed.yolov3c").exists()
    caplog.clear()
    assert compress.main([*arguments("killed"), "--resume"]) == 128 + signal.SIGINT  # now in the centroid tuning
    assert interrupted == {"finetune_pruned", "finetune_shared"}
    assert "finetune_pruned: resuming fine-tuning at epoch 2 of 2" in caplog.text
    caplog.clear()
    assert compress.main([*arguments("killed"), "--resume"]) == 0
    assert "finetune_pruned: fine-tuning finished before; its last.pt read back" in caplog.text
    assert "finetune_shared: resuming fine-tuning at epoch 2 of 2" in caplog.text
    assert (tmp_path / "killed.yolov3c").read_bytes() == (tmp_path / "straight.yolov3c").read_bytes()
    capsys.readouterr()

    changed = [*arguments("killed"), "--bits", "4", "--resume"]
    assert compress.main(changed) == 2
    assert "compress.json: the run was started with other arguments (bits: 3, now 4)" in capsys.readouterr().err
    assert compress.main([*arguments("elsewhere"), "--resume"]) == 2
    assert "compress.json: not found" in capsys.readouterr().err
