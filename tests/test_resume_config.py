"""--resume refuses an args.yaml edited to change the model or data, naming the key; --force accepts it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from test_train import write_config

from yolov3.checkpoint import Checkpoint, save_checkpoint
from yolov3.cli import train as cli
from yolov3.config_loading import to_dict
from yolov3.train.config import load_train_config


class StubTrainer:
    """Stands in for the trainer: the check under test runs before it is built."""

    built = 0

    def __init__(self, *args, **kwargs) -> None:
        StubTrainer.built += 1

    def fit(self):
        raise ValueError("stub trainer: not training")


@pytest.fixture()
def run_dir(tmp_path: Path) -> Path:
    config = load_train_config(write_config(tmp_path))
    run = tmp_path / "logs" / "run"
    run.mkdir(parents=True)
    (run / "args.yaml").write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
    save_checkpoint(run / "last.pt", Checkpoint(config=to_dict(config)))
    return run


def edit(run: Path, section: str, key: str, value: object) -> None:
    data = yaml.safe_load((run / "args.yaml").read_text())
    data[section][key] = value
    (run / "args.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


@pytest.mark.parametrize(("section", "key", "value"), [("model", "name", "yolov3"), ("data", "image_size", 96)])
def test_changed_model_or_data_is_refused(run_dir: Path, monkeypatch, capsys, section, key, value) -> None:
    monkeypatch.setattr(cli, "build_trainer", StubTrainer)
    edit(run_dir, section, key, value)
    StubTrainer.built = 0
    assert cli.main(["--resume", str(run_dir), "--no-progress"]) == 2
    error = capsys.readouterr().err
    assert f"{section}.{key} is {value!r}" in error and "--force" in error and "args.yaml" in error
    assert error.count("\n") == 1 and StubTrainer.built == 0
    assert cli.main(["--resume", str(run_dir), "--force", "--no-progress"]) == 2  # the stub's own error
    assert StubTrainer.built == 1 and "stub trainer" in capsys.readouterr().err


def test_other_sections_and_workers_may_change(run_dir: Path, monkeypatch) -> None:
    monkeypatch.setattr(cli, "build_trainer", StubTrainer)
    edit(run_dir, "train", "epochs", 5)
    edit(run_dir, "data", "workers", 2)
    StubTrainer.built = 0
    cli.main(["--resume", str(run_dir), "--no-progress"])
    assert StubTrainer.built == 1


def test_set_override_is_checked_too(run_dir: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(cli, "build_trainer", StubTrainer)
    assert cli.main(["--resume", str(run_dir), "--set", "data.batch_size=8", "--no-progress"]) == 2
    assert "data.batch_size is 8 but the run" in capsys.readouterr().err
