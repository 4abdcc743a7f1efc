"""Checkpoints: atomic, safe to load, complete enough to rebuild the model and restore generators."""

from __future__ import annotations

import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from yolov3.models import create_model
from yolov3.train.checkpoint import (
    CheckpointError,
    load_checkpoint,
    model_from_checkpoint,
    restore_rng_state,
    rng_state,
    save_checkpoint,
)


def test_round_trip_rebuilds_the_model(tmp_path: Path) -> None:
    model = create_model("yolov3_tiny_test", num_classes=2).eval()
    path = tmp_path / "last.pt"
    save_checkpoint(
        path,
        {
            "model": {"name": "yolov3_tiny_test", "kwargs": {"num_classes": 2}},
            "model_state": model.state_dict(),
            "class_names": ("a", "b"),
            "input_size": (64, 64),
        },
    )
    checkpoint = load_checkpoint(path)
    assert checkpoint["class_names"] == ("a", "b")
    rebuilt = model_from_checkpoint(checkpoint).eval()
    image = torch.rand(1, 3, 64, 64)
    for ours, theirs in zip(model(image), rebuilt(image), strict=True):
        assert torch.equal(ours, theirs)
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left behind


def test_rng_state_round_trip_through_a_checkpoint(tmp_path: Path) -> None:
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    save_checkpoint(tmp_path / "rng.pt", {"rng": rng_state()})
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    restore_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_unsafe_and_foreign_files_are_refused(tmp_path: Path) -> None:
    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"format": "yolov3-checkpoint", "x": Payload()}))
    with pytest.raises(CheckpointError, match="not a checkpoint this library wrote"):
        load_checkpoint(evil)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="no 'format' marker"):
        load_checkpoint(foreign)
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_checkpoint(tmp_path / "missing.pt")
    truncated = tmp_path / "truncated.pt"
    save_checkpoint(truncated, {"model_state": {"w": torch.zeros(1000)}})
    truncated.write_bytes(truncated.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(truncated)


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"epoch": 1})

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(path, {"epoch": 2, "bad": Unpicklable()})
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
