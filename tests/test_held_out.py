"""The held-out evaluation callback: the numbers ``evaluate --data`` gives, on a clock without its own time."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from test_train import tiny_config

from yolov3.checkpoint import load_checkpoint
from yolov3.evaluation.dataset_run import DatasetEvaluationSettings, evaluate_on_dataset, read_data_source
from yolov3.inference.model_loading import load_inference_model
from yolov3.train.builder import build_trainer
from yolov3.train.config import load_train_config
from yolov3.train.held_out import HeldOutEvaluation, HeldOutRecord

EVALUATION_PAUSE = 0.4  # seconds each held-out evaluation sleeps, to make its exclusion from the clock visible


class SlowHeldOut(HeldOutEvaluation):
    def evaluate(self, trainer):
        time.sleep(EVALUATION_PAUSE)
        return super().evaluate(trainer)


def test_held_out_records_match_evaluate_and_exclude_their_own_time(tmp_path: Path) -> None:
    config_path = tmp_path / "tiny.yaml"
    overrides = {"train.epochs": 2, "eval.every_epochs": 1, "logging.images_every_epochs": 0}
    config_path.write_text(yaml.safe_dump(tiny_config(tmp_path, **overrides)))
    config = load_train_config(config_path)
    seen: list[HeldOutRecord] = []
    held_out = SlowHeldOut("val", every_epochs=1, at_start=True, on_record=seen.append)  # synthetic data: no test
    started = time.perf_counter()
    result = build_trainer(config, tmp_path / "run", progress=False, callbacks=[held_out]).fit()
    wall_seconds = time.perf_counter() - started

    assert [record.epoch for record in held_out.records] == [0, 1, 2]  # before training, then every epoch
    assert seen == held_out.records
    first, second, last = held_out.records
    assert first.minutes == 0.0 and first.val_map50 is None
    assert 0.0 < second.minutes < last.minutes
    assert all(record.evaluation_seconds >= EVALUATION_PAUSE for record in held_out.records)
    # the clock stops for the evaluation after epoch 1, so training minutes + that evaluation fit in the wall time
    assert last.minutes * 60 + second.evaluation_seconds <= wall_seconds
    # on the val split, with the config's settings, the held-out numbers are the trainer's validation ...
    for record in held_out.records[1:]:
        assert record.val_map50 == pytest.approx(result.history[record.epoch - 1]["mAP50"], abs=1e-6)
        assert record.map50 == pytest.approx(record.val_map50, abs=1e-6)
    # ... and what ``evaluate --weights last.pt --data tiny.yaml --split val`` reports
    loaded = load_inference_model(tmp_path / "run" / "last.pt")
    evaluation = evaluate_on_dataset(loaded, read_data_source(config_path), DatasetEvaluationSettings(split="val"))
    assert last.map50 == pytest.approx(evaluation.result.coco.stats["AP50"], abs=1e-6)
    assert last.map == pytest.approx(evaluation.result.coco.stats["AP"], abs=1e-6)
    assert set(last.per_class) == set(config.data.dataset.class_names() or loaded.class_names)

    state = load_checkpoint(tmp_path / "run" / "last.pt").callbacks[0]  # a resume gets the records back
    restored = HeldOutEvaluation("val")
    restored.load_state_dict(state)
    assert restored.records == held_out.records
    assert restored.state_dict()["minutes"] >= last.minutes
