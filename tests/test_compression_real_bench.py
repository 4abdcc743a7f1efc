"""bench/compression_real.py: the table it records, and the artifacts it reuses from a kept folder."""

from __future__ import annotations

from pathlib import Path

import pytest

import compression_real


def results(rows: list[dict]) -> dict:
    return {
        "machine": "a CPU, 2 logical cores",
        "python": "3.11",
        "torch": "2.x",
        "onnxruntime": "1.x",
        "command": "python bench/compression_real.py --checkpoint best.pt",
        "date": "2026-12-06 09:00 UTC",
        "background_cores": 0.05,
        "checkpoint": "best.pt",
        "cfg": "configs/bccd.yaml",
        "split": "test",
        "size": (416, 416),
        "repeats": 20,
        "rows": rows,
    }


def row(variant: str, size: int, map50: float, one: float | None, two: float | None) -> dict:
    latency = {key: value for key, value in (("1", one), ("2", two)) if value is not None}
    return {"variant": variant, "bytes": size, "map50": map50, "map": map50 / 2, "backend": "b", "latency_ms": latency}


def test_render_gives_ratios_to_the_fp32_weights_and_the_fp32_onnx_time() -> None:
    table = compression_real.render(
        results(
            [
                row("fp32 ONNX", 35_000_000, 0.901, 40.0, 25.0),
                row("fp32 .weights (Darknet)", 34_800_000, 0.901, None, None),
                row("int8 QAT ONNX (3 epochs)", 8_700_000, 0.903, 13.0, 9.0),
                row("Deep Compression .yolov3c", 870_000, 0.895, None, None),
            ]
        )
    )
    lines = {line.split(" | ")[0].lstrip("| "): line for line in table.splitlines() if line.startswith("| ")}
    assert "| 34,800,000 | 1.00x | 0.901 | +0.0 |" in lines["fp32 .weights (Darknet)"]
    assert "| 870,000 | 40.00x | 0.895 | -0.6 |" in lines["Deep Compression .yolov3c"]  # 34.8e6 / 0.87e6
    assert "| 13.0 | 3.08x | 9.0 |" in lines["int8 QAT ONNX (3 epochs)"]  # 40 / 13 ms at 1 thread
    assert "| - | - | - |" in lines["Deep Compression .yolov3c"]  # not timed: runs as a dense fp32 model
    assert "`python bench/compression_real.py --checkpoint best.pt`" in table


def test_the_lottery_line_names_the_sparsest_ticket_within_one_point_and_its_control() -> None:
    lottery = [
        row("lottery: dense (15 epochs from the COCO weights)", 1, 0.889, None, None),
        row("lottery: ticket, round 1 (50.0% sparse)", 1, 0.882, None, None),  # -0.7 of the lottery's dense
        row("lottery: random re-init control, round 1", 1, 0.845, None, None),
        row("lottery: ticket, round 2 (75.0% sparse)", 1, 0.869, None, None),  # -2.0
        row("lottery: random re-init control, round 2", 1, 0.824, None, None),
        row("lottery: ticket, round 3 (87.5% sparse)", 1, 0.880, None, None),  # -0.9, but not of the table's dense
    ]
    table = compression_real.render(results([row("fp32 ONNX", 35_000_000, 0.901, 40.0, 25.0),
                                             row("fp32 .weights (Darknet)", 34_800_000, 0.901, None, None),
                                             *lottery]))  # fmt: skip
    assert "- of the dense model of this table (0.901): none (the best ticket: 50.0% sparse, 0.882)" in table
    # The sparsest within the point wins, even after a round that fell out of it; round 3 ran no control.
    assert "- of the lottery's own dense run (0.889): **87.5% sparse** (0.880); the random re-init control at " \
           "that sparsity: not run" in table  # fmt: skip
    no_lottery = compression_real.render(results([row("fp32 ONNX", 1, 0.9, 1.0, 1.0),
                                                  row("fp32 .weights (Darknet)", 1, 0.9, None, None)]))  # fmt: skip
    assert "Lottery ticket" not in no_lottery


def test_a_kept_artifact_is_not_made_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[list[str]] = []

    def fake_run(command: list[str], **_: object) -> object:
        ran.append(command)
        raise AssertionError("a kept artifact must not be made again")

    monkeypatch.setattr(compression_real.subprocess, "run", fake_run)
    kept = tmp_path / "fp32.onnx"
    kept.write_bytes(b"onnx")
    compression_real.run_command(["yolov3.export", "--out", str(kept)], kept)
    assert ran == []


def test_darknet_weights_count_their_cfg_and_find_the_structured_one(tmp_path: Path) -> None:
    (tmp_path / "model.weights").write_bytes(b"w" * 100)
    (tmp_path / "model.cfg").write_text("c" * 10)
    (tmp_path / "finetuned.weights").write_bytes(b"w" * 50)
    (tmp_path / "pruned.cfg").write_text("c" * 5)
    assert compression_real.artifact_bytes(tmp_path / "model.weights") == 110
    assert compression_real.darknet_cfg(tmp_path / "finetuned.weights") == tmp_path / "pruned.cfg"
    assert compression_real.artifact_bytes(tmp_path / "finetuned.weights") == 55
