"""Disk full and permission errors during a checkpoint or .weights write: previous file intact, one line names it."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import torch

from yolov3.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from yolov3.models import create_model


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES])
def test_failed_checkpoint_write_keeps_previous(tmp_path: Path, monkeypatch, code: int) -> None:
    target = tmp_path / "last.pt"
    save_checkpoint(target, Checkpoint(epoch=1, model_state={"w": torch.ones(3)}))
    before = target.read_bytes()

    def failing_save(payload, file):
        Path(file).write_bytes(b"partial")
        raise OSError(code, "simulated")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError) as caught:
        save_checkpoint(target, Checkpoint(epoch=2))
    assert caught.value.errno == code and caught.value.filename == str(target)
    assert "\n" not in str(caught.value) and str(target) in str(caught.value)
    monkeypatch.undo()
    assert target.read_bytes() == before and load_checkpoint(target).epoch == 1
    assert [path.name for path in tmp_path.iterdir()] == ["last.pt"]  # no temporary left behind


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES])
def test_failed_weights_write_keeps_previous(tmp_path: Path, monkeypatch, code: int) -> None:
    model = create_model("yolov3_tiny_test", num_classes=2)
    target = tmp_path / "model.weights"
    model.save_darknet_weights(target)
    before = target.read_bytes()
    with torch.no_grad():
        next(model.parameters()).add_(1.0)

    def failing_write(self, data):
        raise OSError(code, "simulated")

    monkeypatch.setattr(Path, "write_bytes", failing_write)
    with pytest.raises(OSError) as caught:
        model.save_darknet_weights(target)
    monkeypatch.undo()
    assert caught.value.errno == code and caught.value.filename == str(target) and "\n" not in str(caught.value)
    assert target.read_bytes() == before
    assert [path.name for path in tmp_path.iterdir()] == ["model.weights"]
