"""``python -m yolov3.export --int8 --qat --resume``: a QAT fine-tuning SIGKILLed inside an atomic write and inside a
training epoch, resumed each time, ends equal to an uninterrupted run (``last.pt``: the weights, batch-norm
statistics and every fake quantizer's observer state; the exported int8 ONNX), and a finished run's resume exports
the same file again; a resume with other settings is refused, naming what changed.

The launches run ``tests/kill_in_write.py`` (a kill inside the Nth atomic write) and are timed as
:mod:`tests.test_kill_resume` times them (CPU seconds of the child against the uninterrupted run's timeline).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from test_compress_cli import tiny_checkpoint
from test_kill_resume import ROOT, completed_epochs, environment, run
from test_train import write_config

from yolov3.checkpoint import load_checkpoint
from yolov3.cli.export import main as export_main

QAT_EPOCHS = 3  # the last one trains against frozen batch-norm statistics and activation ranges


def initializers(path: Path) -> dict[str, np.ndarray]:
    return {item.name: numpy_helper.to_array(item) for item in onnx.load(str(path)).graph.initializer}


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads CPU times from /proc")
def test_qat_fine_tuning_killed_and_resumed_ends_equal_to_an_uninterrupted_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    config = write_config(tmp_path, **{"logging.images_every_epochs": 0, "logging.histograms_every_epochs": 0})
    weights = tiny_checkpoint(tmp_path / "best.pt")

    def arguments(out: Path, *extra: str) -> list[str]:
        return ["--weights", str(weights), "--format", "onnx", "--out", str(out), "--int8", "--qat", "--train-cfg",
                str(config), "--qat-epochs", str(QAT_EPOCHS), "--no-progress", *extra]  # fmt: skip

    launcher = [sys.executable, str(ROOT / "tests" / "kill_in_write.py"), "yolov3.cli.export"]
    reference, reference_dir = tmp_path / "reference.onnx", tmp_path / "reference-qat"  # the default --qat-dir
    launch = run([*launcher, *arguments(reference)], environment(), tmp_path / "reference.log",
                 watch=reference_dir / "last.pt")  # fmt: skip
    assert launch.status == 0, (tmp_path / "reference.log").read_text()[-3000:]
    assert launch.training_cpu is not None and len(launch.epoch_cpu) == QAT_EPOCHS, launch
    timeline = (range(QAT_EPOCHS + 1), [0.0] + [cpu - launch.training_cpu for cpu in launch.epoch_cpu])

    killed, killed_dir, log = tmp_path / "killed.onnx", tmp_path / "killed-qat", tmp_path / "killed.log"
    # 1. Inside the third atomic write of a fresh run (qat.json, best.pt of epoch 1, then last.pt): no last.pt yet.
    assert run([*launcher, *arguments(killed)], environment(kill_in_write=3), log).status == -9, log.read_text()
    assert list(killed_dir.glob(".last.pt.*.tmp")) and not (killed_dir / "last.pt").is_file()
    # 2. Resumed (from the start: no last.pt) and killed halfway through the second epoch.
    halfway = float(np.interp(1.5, *timeline))
    status = run([*launcher, *arguments(killed, "--resume")], environment(), log, kill_in_training=halfway).status
    assert status == -9, log.read_text()[-4000:]
    assert "no last.pt (stopped before its first epoch completed): QAT from the start" in log.read_text()
    assert not list(killed_dir.glob(".*.tmp")), "the resumed run did not remove the partial files of killed writes"
    before = completed_epochs(killed_dir)
    assert 1 <= before < QAT_EPOCHS, before
    # Other settings: refused before anything is trained, naming the key, the run's value and the new one.
    assert export_main(arguments(killed, "--resume", "--qat-lr-factor", "0.2")) == 2
    error = capsys.readouterr().err
    assert f"{killed_dir / 'qat.json'}: the run was started with other arguments" in error
    assert "learning_rate_factor: 0.1, now 0.2" in error
    with pytest.raises(SystemExit):
        export_main(["--weights", str(weights), "--format", "onnx", "--out", str(killed), "--resume"])
    assert "--resume go with --int8 --qat" in capsys.readouterr().err

    # 3. Resumed from last.pt to the end.
    assert run([*launcher, *arguments(killed, "--resume")], environment(), log).status == 0, log.read_text()[-4000:]
    last_launch = log.read_text().rsplit("\n$ ", 1)[-1]
    assert f"QAT: resuming {killed_dir} at epoch {before + 1} of {QAT_EPOCHS}" in last_launch
    trained = [epoch for epoch in range(1, QAT_EPOCHS + 1) if f"yolov3.train.trainer: epoch {epoch}:" in last_launch]
    assert trained == list(range(before + 1, QAT_EPOCHS + 1)), "the resume did not continue from last.pt"
    assert not list(killed_dir.glob(".*.tmp"))
    resumed, expected = load_checkpoint(killed_dir / "last.pt"), load_checkpoint(reference_dir / "last.pt")
    assert resumed.epoch == expected.epoch == QAT_EPOCHS - 1
    assert [row["mAP50"] for row in resumed.history] == pytest.approx([row["mAP50"] for row in expected.history])
    assert resumed.model_state.keys() == expected.model_state.keys()
    observers = [key for key in expected.model_state if key.endswith(("min_val", "max_val", "observer_enabled"))]
    assert observers, "last.pt holds no fake-quantizer state"
    for key, value in expected.model_state.items():
        torch.testing.assert_close(resumed.model_state[key], value, rtol=0, atol=1e-6, msg=f"last.pt {key}")
    ours, theirs = initializers(killed), initializers(reference)
    assert ours.keys() == theirs.keys() and any(value.dtype == np.int8 for value in theirs.values())
    for name, value in theirs.items():
        np.testing.assert_allclose(ours[name].astype(np.float64), value.astype(np.float64), rtol=0, atol=1e-6,
                                   err_msg=f"int8 ONNX initializer {name}")  # fmt: skip

    # A finished run's resume only reads last.pt back (here in this process): the same int8 ONNX again.
    caplog.set_level("INFO")
    again = tmp_path / "again.onnx"
    assert export_main(arguments(again, "--qat-dir", str(killed_dir), "--resume")) == 0
    assert f"QAT: {killed_dir} finished its {QAT_EPOCHS} epochs before; its last.pt read back" in caplog.text
    trainer_lines = [record.getMessage() for record in caplog.records if record.name == "yolov3.train.trainer"]
    assert not [line for line in trainer_lines if line.startswith("epoch ")], "a finished run trained again"
    for name, value in initializers(again).items():
        np.testing.assert_allclose(value.astype(np.float64), theirs[name].astype(np.float64), rtol=0, atol=1e-6,
                                   err_msg=f"int8 ONNX initializer {name}, exported again")  # fmt: skip
