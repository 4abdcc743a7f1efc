"""``python -m yolov3.evaluate`` through ``main(argv)``: tables, JSON report, PR plot and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from yolov3.evaluate import main
from yolov3.evaluation import evaluate_coco

GROUND_TRUTH = {
    "images": [{"id": 1, "width": 640, "height": 480}, {"id": 2, "width": 640, "height": 480}],
    "categories": [{"id": 1, "name": "person"}, {"id": 5, "name": "bicycle"}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 100, 200], "area": 20000, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 5, "bbox": [300, 100, 60, 40], "area": 2400, "iscrowd": 0},
        {"id": 3, "image_id": 2, "category_id": 1, "bbox": [50, 60, 20, 30], "area": 600, "iscrowd": 0},
        {"id": 4, "image_id": 2, "category_id": 1, "bbox": [400, 50, 200, 200], "area": 40000, "iscrowd": 1},
    ],
}
DETECTIONS = [
    {"image_id": 1, "category_id": 1, "bbox": [12, 8, 98, 205], "score": 0.95},
    {"image_id": 1, "category_id": 5, "bbox": [305, 102, 58, 40], "score": 0.6},
    {"image_id": 2, "category_id": 1, "bbox": [52, 60, 20, 28], "score": 0.05},
    {"image_id": 2, "category_id": 1, "bbox": [410, 60, 190, 185], "score": 0.5},  # on the crowd box
    {"image_id": 2, "category_id": 5, "bbox": [100, 300, 50, 50], "score": 0.003},  # false positive
]


@pytest.fixture
def inputs(tmp_path: Path) -> tuple[Path, Path]:
    ground_truth_path, detections_path = tmp_path / "ann.json", tmp_path / "results.json"
    ground_truth_path.write_text(json.dumps(GROUND_TRUTH))
    detections_path.write_text(json.dumps(DETECTIONS))
    return ground_truth_path, detections_path


def test_cli_prints_tables_and_writes_report(inputs: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    ground_truth_path, detections_path = inputs
    report_path, plots = tmp_path / "out" / "report.json", tmp_path / "plots"
    argv = ["--gt", str(ground_truth_path), "--detections", str(detections_path), "--voc", "--voc07", "--sweep"]
    argv += ["--per-class", "--plots", str(plots), "--json-out", str(report_path)]
    assert main(argv) == 0
    printed = capsys.readouterr()
    assert printed.err == ""
    expected = evaluate_coco(GROUND_TRUTH, DETECTIONS)
    assert expected.format_table(per_class=True) in printed.out
    assert "AP50 (VOC area)" in printed.out and "AP50 (VOC07 11-point)" in printed.out
    assert "| score ≥ | boxes | mAP@[.5:.95] | mAP@0.5 | VOC mAP@0.5 |" in printed.out
    assert "| 0.01 | 4 |" in printed.out and "| 0.001 | 5 |" in printed.out
    assert "loading annotations" not in printed.out  # pycocotools' chatter is silenced
    assert (plots / "pr_curves.png").read_bytes()[:4] == b"\x89PNG"

    report = json.loads(report_path.read_text())
    assert report["coco"]["stats"] == expected.stats
    assert [row["num_detections"] for row in report["sweep"]] == [3, 4, 5, 5]
    # Both persons and the bicycle are found above 0.05 with nothing ranked between: VOC AP 1 for both.
    assert report["voc"]["mAP"] == 1.0 and report["voc07"]["mAP"] == 1.0
    assert report["voc"]["per_class"][0]["num_difficult"] == 1  # the crowd box is ignored


def test_cli_without_options_prints_only_the_coco_table(inputs: tuple[Path, Path], capsys) -> None:
    ground_truth_path, detections_path = inputs
    assert main(["--gt", str(ground_truth_path), "--detections", str(detections_path)]) == 0
    out = capsys.readouterr().out
    assert out.count("Average Precision") == 6 and out.count("Average Recall") == 6
    assert "bicycle" not in out and "VOC" not in out and "|" not in out.replace("| area", "").replace("| maxDets", "")


def error_of(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


def test_cli_errors_name_the_file(inputs: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    ground_truth_path, detections_path = inputs
    missing = tmp_path / "nope.json"
    message = error_of(["--gt", str(missing), "--detections", str(detections_path)], capsys)
    assert message == f"error: {missing}: no such file"

    broken = tmp_path / "broken.json"
    broken.write_text('[{"image_id": 1,')
    message = error_of(["--gt", str(ground_truth_path), "--detections", str(broken)], capsys)
    assert message.startswith(f"error: {broken}: invalid JSON at line 1")

    for key, value, expected in [
        ("image_id", 999, f"detection 2: image_id 999 is not an image of {ground_truth_path}"),
        ("category_id", 3, f"detection 2: category_id 3 is not a category of {ground_truth_path} (1, 5)"),
    ]:
        bad = tmp_path / f"bad_{key}.json"
        bad.write_text(json.dumps([*DETECTIONS[:2], {**DETECTIONS[2], key: value}]))
        message = error_of(["--gt", str(ground_truth_path), "--detections", str(bad)], capsys)
        assert message == f"error: {bad}: {expected}"

    not_coco = tmp_path / "not_coco.json"
    not_coco.write_text(json.dumps({"images": [], "annotations": []}))
    message = error_of(["--gt", str(not_coco), "--detections", str(detections_path)], capsys)
    assert message == f"error: {not_coco}: expected key 'categories' with a list (COCO instances format)"
