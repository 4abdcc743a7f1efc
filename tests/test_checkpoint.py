"""Checkpoints: atomic, safe to load, complete enough to rebuild the model and restore generators."""

from __future__ import annotations

import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from yolov3.checkpoint import (
    Checkpoint,
    CheckpointError,
    ModelSpec,
    load_checkpoint,
    model_from_checkpoint,
    restore_rng_state,
    rng_state,
    save_checkpoint,
)
from yolov3.models import create_model


def test_round_trip_rebuilds_the_model(tmp_path: Path) -> None:
    model = create_model("yolov3_tiny_test", num_classes=2).eval()
    path = tmp_path / "last.pt"
    save_checkpoint(
        path,
        Checkpoint(
            model=ModelSpec("yolov3_tiny_test", {"num_classes": 2}),
            model_state=model.state_dict(),
            class_names=("a", "b"),
            input_size=(64, 64),
        ),
    )
    checkpoint = load_checkpoint(path)
    assert checkpoint.class_names == ("a", "b")
    rebuilt = model_from_checkpoint(checkpoint).eval()
    image = torch.rand(1, 3, 64, 64)
    for ours, theirs in zip(model(image), rebuilt(image), strict=True):
        assert torch.equal(ours, theirs)
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left behind


def test_rng_state_round_trip_through_a_checkpoint(tmp_path: Path) -> None:
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    save_checkpoint(tmp_path / "rng.pt", Checkpoint(rng=rng_state()))
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    restore_rng_state(load_checkpoint(tmp_path / "rng.pt").rng)
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
    save_checkpoint(truncated, Checkpoint(model_state={"w": torch.zeros(1000)}))
    truncated.write_bytes(truncated.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(truncated)


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(path, Checkpoint(epoch=1))

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(path, Checkpoint(epoch=2, extra={"bad": Unpicklable()}))
    assert load_checkpoint(path).epoch == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def old_layout_checkpoint(model: torch.nn.Module, ema: torch.nn.Module) -> dict:
    """A ``last.pt`` exactly as ``yolov3/train/checkpoint.py`` wrote it before the typed module (a plain dict,
    lists where JSON-like configs gave them, ``ema_state: None`` written out)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.rand(1, 3, 64, 64))[0].sum().backward()
    optimizer.step()
    return {
        "format": "yolov3-checkpoint",
        "version": 1,
        "model": {"name": "yolov3_tiny_test", "kwargs": {"num_classes": 2}},
        "model_state": model.state_dict(),
        "ema_state": ema.state_dict(),
        "class_names": ["a", "b"],
        "input_size": [64, 96],
        "preprocessing": {"letterbox": True, "fill": 0.5},
        "normalization": "darknet",
        "optimizer": optimizer.state_dict(),
        "scheduler": {"last_epoch": 3, "base_lrs": [0.1]},
        "runner": {"optimizer_steps": 4, "scaler": {}},
        "amp": {"mode": "off", "reason": "cpu"},
        "epoch": 2,
        "best_map50": 0.25,
        "history": [{"loss": 1.5, "epoch": 1}, {"loss": 1.25, "mAP50": 0.25, "epoch": 2}],
        "callbacks": [{"last_pruned_step": 4}],
        "rng": rng_state(),
        "config": {"seed": 0, "train": {"epochs": 3}},
        "pruning": {"method": "one_shot", "sparsity": 0.5, "scope": "global"},
        "rewind_iteration": 1,
        "written_by_a_later_version": {"kept": True},
    }


def test_a_checkpoint_written_in_the_old_layout_loads(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, ema = create_model("yolov3_tiny_test", num_classes=2), create_model("yolov3_tiny_test", num_classes=2)
    written = old_layout_checkpoint(model, ema)
    path = tmp_path / "last.pt"
    torch.save(written, path)
    checkpoint = load_checkpoint(path)
    assert checkpoint.model == ModelSpec("yolov3_tiny_test", {"num_classes": 2})
    assert checkpoint.class_names == ("a", "b") and checkpoint.input_size == (64, 96)
    assert (checkpoint.epoch, checkpoint.best_map50, checkpoint.rewind_iteration) == (2, 0.25, 1)
    assert checkpoint.history == written["history"] and checkpoint.callbacks == written["callbacks"]
    assert checkpoint.extra == {"written_by_a_later_version": {"kept": True}}
    training = checkpoint.training_state(str(path))
    assert training.optimizer["param_groups"] == written["optimizer"]["param_groups"]
    assert training.runner == {"optimizer_steps": 4, "scaler": {}} and training.epoch == 2
    rebuilt = model_from_checkpoint(checkpoint).eval()  # the EMA weights, as inference uses
    image = torch.rand(1, 3, 64, 64)
    for ours, theirs in zip(ema.eval()(image), rebuilt(image), strict=True):
        assert torch.equal(ours, theirs)
    # Written back, the file holds the same entries (lists read as tuples where the type says so).
    again = tmp_path / "again.pt"
    save_checkpoint(again, checkpoint)
    rewritten = torch.load(again, weights_only=True)
    assert set(rewritten) == set(written)
    assert rewritten["class_names"] == ("a", "b") and rewritten["input_size"] == (64, 96)
    for key in ("model", "preprocessing", "history", "callbacks", "config", "pruning", "written_by_a_later_version"):
        assert rewritten[key] == written[key], key


def test_entries_of_the_wrong_type_name_the_file_and_key(tmp_path: Path) -> None:
    cases = {
        "model": ({"kwargs": {}}, "checkpoint lacks 'model' {name, kwargs}, got dict"),
        "model_state": ({"w": [1.0]}, "'model_state' must be a mapping of parameter names to tensors, got dict"),
        "class_names": ("ab", "'class_names' must be a list of strings, got 'ab'"),
        "input_size": ([64, 64, 3], "'input_size' must be (height, width) integers, got list"),
        "epoch": (True, "'epoch' must be an integer, got True"),
        "best_map50": ("0.5", "'best_map50' must be a number, got '0.5'"),
        "history": ([1.0], "'history' must be a list of mappings, got list"),
        "rng": ([], "'rng' must be a mapping, got list"),
    }
    for key, (value, message) in cases.items():
        path = tmp_path / f"{key}.pt"
        torch.save({"format": "yolov3-checkpoint", "version": 1, key: value}, path)
        with pytest.raises(CheckpointError) as caught:
            load_checkpoint(path)
        assert str(caught.value) == f"{path}: {message}"
    newer = tmp_path / "newer.pt"
    torch.save({"format": "yolov3-checkpoint", "version": 2}, newer)
    with pytest.raises(CheckpointError, match="version 2 is newer than 1"):
        load_checkpoint(newer)


def test_an_inference_checkpoint_cannot_be_resumed_and_drops_training_state() -> None:
    full = Checkpoint(
        model=ModelSpec("yolov3_tiny_test"), model_state={}, optimizer={"state": {}}, scheduler={}, runner={},
        epoch=0, best_map50=0.0, rng={"python": ()}, callbacks=[{}], config={"seed": 1},
    )  # fmt: skip
    assert full.training_state().epoch == 0 and full.training_state().history == []
    plain = full.without_training_state()
    assert (plain.optimizer, plain.scheduler, plain.runner, plain.callbacks, plain.rng) == (None,) * 5
    assert plain.config == {"seed": 1} and plain.model == full.model  # what inference and resume checks read
    with pytest.raises(CheckpointError, match=r"^last\.pt: cannot resume from it: it has no 'optimizer', .*'rng'"):
        plain.training_state("last.pt")


def test_model_from_a_checkpoint_without_a_model_is_an_error() -> None:
    with pytest.raises(CheckpointError, match="lacks 'model'"):
        model_from_checkpoint(Checkpoint(epoch=1))
    with pytest.raises(KeyError, match="unknown model 'nope'"):
        ModelSpec("nope").build()
