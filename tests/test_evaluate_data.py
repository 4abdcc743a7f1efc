"""``python -m yolov3.evaluate --weights W --data CONFIG``: the same numbers as the trainer's validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from test_train import tiny_config

from yolov3 import evaluate
from yolov3.inference.model_loading import load_inference_model
from yolov3.train.builder import build_trainer
from yolov3.train.config import load_train_config


@pytest.mark.slow
def test_evaluate_data_equals_the_trainers_validation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config_path = tmp_path / "tiny.yaml"
    mapping = tiny_config(tmp_path, **{"train.epochs": 3, "eval.every_epochs": 3, "logging.images_every_epochs": 0})
    mapping["optimizer"] = {"name": "adamw", "learning_rate": 0.01}
    config_path.write_text(yaml.safe_dump(mapping))
    config = load_train_config(config_path)
    result = build_trainer(config, tmp_path / "run", progress=False).fit()
    trainer_scores = result.history[-1]
    assert trainer_scores["mAP50"] == pytest.approx(result.last_map50)

    report_path = tmp_path / "report.json"
    code = evaluate.main(
        ["--weights", str(tmp_path / "run" / "last.pt"), "--data", str(config_path), "--split", "val",
         "--json-out", str(report_path), "--plots", str(tmp_path / "plots")]
    )  # fmt: skip
    assert code == 0
    output = capsys.readouterr().out
    assert "Average Precision" in output and "AP50 (VOC area)" in output
    report = json.loads(report_path.read_text())
    assert report["mAP50"] == pytest.approx(trainer_scores["mAP50"], abs=1e-3)
    assert report["coco"]["stats"]["AP"] == pytest.approx(trainer_scores["coco/AP"], abs=1e-3)
    assert (tmp_path / "plots" / "pr_curves.png").stat().st_size > 1000
    assert (tmp_path / "plots" / "detections.png").stat().st_size > 1000
    loaded = load_inference_model(tmp_path / "run" / "last.pt")
    assert loaded.num_classes == 3


def test_evaluate_data_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        evaluate.main(["--weights", "w.pt"])  # no --data
    assert "--weights needs --data" in capsys.readouterr().err
    config_path = tmp_path / "tiny.yaml"
    config_path.write_text(yaml.safe_dump(tiny_config(tmp_path)))
    assert evaluate.main(["--weights", str(tmp_path / "missing.pt"), "--data", str(config_path)]) == 2
    assert "missing.pt: no such weights file" in capsys.readouterr().err
    assert evaluate.main(["--weights", str(tmp_path / "x.pt"), "--data", str(config_path), "--split", "test"]) == 2
