"""A ``.pt`` holding arbitrary Python objects is refused in one line that says why."""

from __future__ import annotations

import collections
import pickle
from pathlib import Path

import pytest
import torch

from yolov3.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint


class Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_arbitrary_objects_refused_in_one_line(tmp_path: Path, writer: str, capsys) -> None:
    evil = tmp_path / "evil.pt"
    payload = {"format": "yolov3-checkpoint", "x": Payload(), "y": collections.OrderedDict()}
    if writer == "torch":
        torch.save(payload, evil)
    else:
        evil.write_bytes(pickle.dumps(payload))
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(evil)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(str(evil))
    assert "not a checkpoint this library wrote" in message and "could run code" in message
    assert "weights_only" not in message and caught.value.__cause__ is None
    assert "this must never run" not in capsys.readouterr().out


def test_corrupt_file_is_one_line(tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.pt"
    save_checkpoint(truncated, Checkpoint(model_state={"w": torch.zeros(1000)}))
    truncated.write_bytes(truncated.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="not a readable checkpoint") as caught:
        load_checkpoint(truncated)
    assert "\n" not in str(caught.value)
