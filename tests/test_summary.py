"""Model summary: Darknet's parameter and BFLOP figures, and the CLIs that print and write models."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from yolov3 import summary as summary_cli
from yolov3.darknet.cfg import parse_cfg
from yolov3.export import darknet_cfg as write_cfg
from yolov3.models import Darknet, create_model
from yolov3.models.summary import summarize, summarize_cfg

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("size", "bflops"), [(320, 38.97), (416, 65.86), (608, 140.69)])
def test_yolov3_bflops_match_darknet(size: int, bflops: float) -> None:
    summary = summarize(create_model("yolov3"), size)
    assert summary.parameters == 61_949_149
    assert round(summary.bflops, 2) == bflops
    assert len(summary.rows) == 107 and summary.rows[-1].output_shape == (255, size // 8, size // 8)


def test_tiny_bflops_and_rows(shared_darknet: Path) -> None:
    rows = summarize_cfg(parse_cfg(shared_darknet / "yolov3-tiny.cfg"), 416, 416)
    assert round(sum(row.bflops for row in rows), 2) == 5.56
    # Darknet's own table: layer 0 is 416x416x3 -> 416x416x16 at 0.150 BFLOPs.
    assert (rows[0].kind, rows[0].filters, rows[0].output_shape) == ("conv", 16, (16, 416, 416))
    assert round(rows[0].bflops, 3) == 0.150
    assert rows[11].kind == "max" and rows[11].output_shape == (512, 13, 13)
    assert rows[20].kind == "route" and rows[20].detail == "19 8"


def test_summary_is_the_same_for_native_and_cfg_built_models(shared_darknet: Path) -> None:
    native = summarize(create_model("yolov3_tiny"), 416)
    built = summarize(Darknet(shared_darknet / "yolov3-tiny.cfg"), 416)
    assert native.rows == built.rows and native.parameters == built.parameters


def test_hook_summary_for_models_without_a_cfg() -> None:
    summary = summarize(create_model("yolov3_mobilenet_v3_small", num_classes=2), (128, 160))
    convs = [row for row in summary.rows if row.kind == "conv"]
    assert convs[0].input_shape == (3, 128, 160) and convs[0].output_shape[1:] == (64, 80)
    assert convs[-1].output_shape == (21, 16, 20)
    assert summary.bflops > 0 and "Total:" in summary.format()


def test_summary_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert summary_cli.main(["--model", "yolov3", "--img-size", "608"]) == 0
    out = capsys.readouterr().out
    assert "Total: 61,949,149 parameters, 140.69 BFLOPs at 608x608" in out
    assert summary_cli.main(["--model", "yolov3_tiny_test", "--img-size", "320", "416"]) == 0
    assert "at 416x320" in capsys.readouterr().out
    assert summary_cli.main(["--model", "yolo"]) == 2
    assert "did you mean 'yolov3'" in capsys.readouterr().err


def test_summary_cli_reports_cfg_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.cfg"
    bad.write_text("[net]\nwidth=32\nheight=32\nchannels=3\n[convolutional]\nsize=x\n")
    assert summary_cli.main(["--cfg", str(bad)]) == 2
    assert f"{bad}:6: [convolutional] size='x' is not an integer" in capsys.readouterr().err


def test_write_cfg_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "tiny.cfg"
    assert write_cfg.main(["--model", "yolov3_tiny", "--num-classes", "3", "-o", str(output)]) == 0
    model = Darknet(output)
    assert [section.classes for section in model.yolo_sections] == [3, 3]
    assert write_cfg.main(["--model", "yolov3_mobilenet_v3_small"]) == 1
    assert "has no Darknet cfg form" in capsys.readouterr().err
    assert write_cfg.main(["--all", str(tmp_path / "all")]) == 0
    assert len(list((tmp_path / "all").glob("*.cfg"))) == len(write_cfg.PROJECT_CFGS)


def test_write_cfg_keeps_its_documented_command() -> None:
    """``python -m yolov3.darknet.write_cfg`` (README, the header of every cfg in darknet/) runs the export's CLI."""
    completed = subprocess.run(
        [sys.executable, "-m", "yolov3.darknet.write_cfg", "--model", "yolov3_tiny_test"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    assert completed.stdout == write_cfg.cfg_text("yolov3_tiny_test")
    assert completed.stdout.startswith("# Written by `python -m yolov3.darknet.write_cfg --model yolov3_tiny_test`")
