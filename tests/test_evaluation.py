"""Evaluation against pycocotools run directly, a transcription of voc_eval.py, and hand-computed cases."""

from __future__ import annotations

import contextlib
import copy
import io
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from yolov3.evaluation import EvaluationInputError, evaluate_coco
from yolov3.evaluation.plots import plot_pr_curves, pr_curves
from yolov3.evaluation.sweep import format_markdown_table, sweep_thresholds
from yolov3.evaluation.voc import evaluate_voc, voc_ap

CATEGORIES = [
    {"id": 3, "name": "person"},
    {"id": 8, "name": "car"},
    {"id": 17, "name": "dog"},
    {"id": 42, "name": "unicorn"},  # no ground truth: AP undefined (-1 in pycocotools)
]
CLASSES_WITH_BOXES = [3, 8, 17]


def make_ground_truth(seed: int = 0, num_images: int = 8) -> dict:
    """Random COCO instances: boxes of every size range, some crowd boxes, one image without boxes."""
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for index in range(num_images):
        image_id = 100 + 7 * index
        images.append({"id": image_id, "width": 640, "height": 480, "file_name": f"{image_id}.jpg"})
        for _ in range(0 if index == 0 else int(rng.integers(2, 9))):
            width, height = np.exp(rng.uniform(np.log(6), np.log(300), size=2))
            x, y = rng.uniform(0, 640 - width), rng.uniform(0, 480 - height)
            box = [round(float(x), 2), round(float(y), 2), round(float(width), 2), round(float(height), 2)]
            annotations.append(
                {
                    "id": 5000 + 3 * len(annotations),
                    "image_id": image_id,
                    "category_id": int(rng.choice(CLASSES_WITH_BOXES)),
                    "bbox": box,
                    "area": round(box[2] * box[3] * float(rng.uniform(0.6, 1.0)), 2),  # like a mask area
                    "iscrowd": int(rng.uniform() < 0.12),
                }
            )
    return {"images": images, "annotations": annotations, "categories": copy.deepcopy(CATEGORIES)}


def make_detections(ground_truth: dict, seed: int = 1, low_scores: bool = False) -> list[dict]:
    """Noisy copies of most boxes (some twice, some with the wrong class), plus false positives.

    ``low_scores``: scores spread over decades (1e-4.5..1), so every sweep threshold removes true positives.
    """
    rng = np.random.default_rng(seed)

    def score() -> float:
        return float(10 ** rng.uniform(-4.5, 0)) if low_scores else float(rng.uniform(0.05, 1))

    detections = []
    for annotation in ground_truth["annotations"]:
        for _ in range(int(rng.choice([0, 1, 1, 1, 2]))):
            x, y, width, height = annotation["bbox"]
            noise = rng.normal(0, 0.12, size=4) * [width, height, width, height]
            box = [x + noise[0], y + noise[1], max(1.0, width + noise[2]), max(1.0, height + noise[3])]
            category = annotation["category_id"] if rng.uniform() > 0.1 else int(rng.choice(CLASSES_WITH_BOXES))
            detections.append({"image_id": annotation["image_id"], "category_id": category, "bbox": box})
    for image in ground_truth["images"]:
        for _ in range(int(rng.integers(1, 5))):
            width, height = rng.uniform(5, 200, size=2)
            box = [float(rng.uniform(0, 400)), float(rng.uniform(0, 300)), float(width), float(height)]
            category = int(rng.choice([category["id"] for category in CATEGORIES]))
            detections.append({"image_id": image["id"], "category_id": category, "bbox": box})
    for detection in detections:
        detection["score"] = score()
    return detections


def reference_cocoeval(tmp_path: Path, ground_truth: dict, detections: list[dict], image_ids=None) -> tuple:
    """pycocotools straight from JSON files, as its own README does it; returns (COCOeval, printed summary)."""
    ground_truth_path, results_path = tmp_path / "reference_gt.json", tmp_path / "reference_results.json"
    ground_truth_path.write_text(json.dumps(ground_truth))
    results_path.write_text(json.dumps(detections))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        coco_ground_truth = COCO(str(ground_truth_path))
        coco_eval = COCOeval(coco_ground_truth, coco_ground_truth.loadRes(str(results_path)), "bbox")
        if image_ids is not None:
            coco_eval.params.imgIds = image_ids
        coco_eval.evaluate()
        coco_eval.accumulate()
    summary = io.StringIO()
    with contextlib.redirect_stdout(summary):
        coco_eval.summarize()
    return coco_eval, summary.getvalue()


def test_evaluate_coco_reproduces_pycocotools(tmp_path: Path) -> None:
    ground_truth = make_ground_truth()
    detections = make_detections(ground_truth)
    assert any(a["iscrowd"] for a in ground_truth["annotations"])
    original = copy.deepcopy(detections)
    report = evaluate_coco(ground_truth, detections)
    assert detections == original  # pycocotools' additions went to a copy
    reference, printed = reference_cocoeval(tmp_path, ground_truth, detections)

    np.testing.assert_array_equal(report.stats_array(), reference.stats)
    assert 0.1 < report.ap < 0.9 and report.stats["AP50"] == reference.stats[1]
    np.testing.assert_array_equal(report.precision, reference.eval["precision"])
    assert report.format_table(per_class=False) == printed.rstrip("\n")
    # Per class, independently: mean of precision[T, R, k, area all, maxDets 100] over entries > -1.
    precision = reference.eval["precision"]
    assert [entry.category_id for entry in report.per_class] == [3, 8, 17, 42]
    assert [entry.name for entry in report.per_class] == ["person", "car", "dog", "unicorn"]
    for k, entry in enumerate(report.per_class):
        block = precision[:, :, k, 0, 2]
        if entry.category_id == 42:
            assert (block == -1).all() and entry.ap is None and entry.ap50 is None
        else:
            assert entry.ap == pytest.approx(block.mean(), abs=1e-12)
            assert entry.ap50 == pytest.approx(block[0].mean(), abs=1e-12)
    defined = [entry.ap for entry in report.per_class if entry.ap is not None]
    assert np.mean(defined) == pytest.approx(report.ap, abs=1e-12)
    counts = {3: 0, 8: 0, 17: 0, 42: 0}
    for annotation in ground_truth["annotations"]:
        counts[annotation["category_id"]] += 0 if annotation["iscrowd"] else 1
    assert {entry.category_id: entry.num_ground_truth for entry in report.per_class} == counts
    assert report.num_detections == len(detections) and report.num_images == 8


def test_evaluate_coco_from_files_and_image_subset(tmp_path: Path) -> None:
    ground_truth = make_ground_truth(seed=4)
    detections = make_detections(ground_truth, seed=5)
    (tmp_path / "gt.json").write_text(json.dumps(ground_truth))
    (tmp_path / "results.json").write_text(json.dumps(detections))
    subset = [100, 114, 121]
    report = evaluate_coco(tmp_path / "gt.json", str(tmp_path / "results.json"), image_ids=subset)
    reference, _ = reference_cocoeval(tmp_path, ground_truth, detections, image_ids=subset)
    np.testing.assert_array_equal(report.stats_array(), reference.stats)
    assert report.num_images == 3
    assert report.num_detections == sum(d["image_id"] in subset for d in detections)


def test_annotation_ids_renumbered_and_missing_fields_filled(tmp_path: Path) -> None:
    # pycocotools records a match by the box's id and reads id 0 as "unmatched": evaluated as given, every
    # detection below would be a FP and AP 0. Loading renumbers ids 1..N and fills the area (width * height)
    # and iscrowd (0) that pycocotools needs.
    ground_truth = make_ground_truth(seed=3)
    bare = copy.deepcopy(ground_truth)
    for annotation in bare["annotations"]:
        annotation["id"] = 0
        del annotation["area"], annotation["iscrowd"]
    normalized = copy.deepcopy(bare)
    for index, annotation in enumerate(normalized["annotations"]):
        width, height = annotation["bbox"][2:]
        annotation.update(id=index + 1, area=width * height, iscrowd=0)
    detections = make_detections(ground_truth, seed=10)
    reference, _ = reference_cocoeval(tmp_path, normalized, detections)
    np.testing.assert_array_equal(evaluate_coco(bare, detections).stats_array(), reference.stats)


def perfect_detections(ground_truth: dict) -> list[dict]:
    return [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
        for a in ground_truth["annotations"]
        if not a["iscrowd"]
    ]


def test_perfect_detections_score_one() -> None:
    ground_truth = make_ground_truth(seed=2)
    detections = perfect_detections(ground_truth)
    report = evaluate_coco(ground_truth, detections)
    # pycocotools divides by (tp + fp + eps), so a perfect precision is 1 - 2e-16.
    assert report.stats["AP"] == pytest.approx(1.0, abs=1e-9)
    assert report.stats["AP50"] == pytest.approx(1.0, abs=1e-9)
    assert report.stats["AR100"] == pytest.approx(1.0, abs=1e-9)
    for use_07_metric in (False, True):
        voc = evaluate_voc(ground_truth, detections, use_07_metric=use_07_metric)
        assert voc.mean_ap == 1.0
        assert all(entry.ap == 1.0 for entry in voc.per_class if entry.ap is not None)


def test_no_detections_score_zero() -> None:
    ground_truth = make_ground_truth(seed=2)
    report = evaluate_coco(ground_truth, [])
    assert report.stats == dict.fromkeys(report.stats, 0.0)  # every size range has boxes: no -1
    assert [entry.ap for entry in report.per_class] == [0.0, 0.0, 0.0, None]
    assert report.num_detections == 0
    for use_07_metric in (False, True):
        voc = evaluate_voc(ground_truth, [], use_07_metric=use_07_metric)
        assert voc.mean_ap == 0.0
        assert [entry.ap for entry in voc.per_class] == [0.0, 0.0, 0.0, None]


def test_bad_detections_are_named_errors() -> None:
    ground_truth = make_ground_truth()
    good = {"image_id": 100, "category_id": 3, "bbox": [0, 0, 10, 10], "score": 0.5}
    cases = [
        ({**good, "image_id": 99}, "detection 1: image_id 99 is not an image"),
        ({**good, "category_id": 5}, "detection 1: category_id 5 is not a category"),
        ({**good, "bbox": [0, 0, 10]}, "'bbox' must be [x, y, width, height]"),
        ({**good, "score": float("nan")}, "'score' must be a finite number"),
        ({key: value for key, value in good.items() if key != "score"}, "missing key 'score'"),
    ]
    for bad, message in cases:
        with pytest.raises(EvaluationInputError, match=message.replace("[", r"\[")):
            evaluate_coco(ground_truth, [good, bad])
    with pytest.raises(EvaluationInputError, match="expected key 'categories'"):
        evaluate_coco({"images": [], "annotations": []}, [])


# ---------------------------------------------------------------------------------------------- VOC


def box(x: float, y: float, width: float = 10, height: float = 10) -> list[float]:
    return [x, y, width, height]


def voc_case(annotations: list[dict], detections: list[dict]) -> dict:
    ground_truth = {
        "images": [{"id": 1}, {"id": 2}],
        "categories": [{"id": 7, "name": "thing"}],
        "annotations": [{"image_id": 1, "category_id": 7, **a} for a in annotations],
    }
    for detection in detections:
        detection.setdefault("category_id", 7)
        detection.setdefault("image_id", 1)
    return ground_truth


def test_voc_hand_computed_case() -> None:
    # Four boxes: G1, G2, G3 in image 1 and G4 in image 2. Detections by score:
    #   .9 on G1 -> TP   .8 nowhere -> FP   .7 on G4 -> TP   .6 on G1 again -> FP (duplicate)   .5 on G2 -> TP
    # cumulative TP 1 1 2 2 3, FP 0 1 1 2 2:
    #   recall    .25  .25  .50  .50  .75
    #   precision 1    1/2  2/3  1/2  3/5
    # Area: highest precision at recall >= r: 1 up to .25, 2/3 up to .5, 3/5 up to .75, then 0:
    #   .25 * 1 + .25 * 2/3 + .25 * 3/5 = 17/30
    # 11-point: t = 0, .1, .2 -> 1; t = .3, .4, .5 -> 2/3; t = .6, .7 -> 3/5; t = .8, .9, 1 -> 0:
    #   (3 + 2 + 1.2) / 11 = 6.2 / 11
    annotations = [{"bbox": box(0, 0)}, {"bbox": box(50, 0)}, {"bbox": box(100, 0)}]
    detections = [
        {"bbox": box(1, 0), "score": 0.9},  # IoU with G1 90/110 = 0.82
        {"bbox": box(300, 300), "score": 0.8},
        {"image_id": 2, "bbox": box(20, 21), "score": 0.7},
        {"bbox": box(0, 1), "score": 0.6},
        {"bbox": box(51, 1), "score": 0.5},
    ]
    ground_truth = voc_case(annotations, detections)
    ground_truth["annotations"].append({"image_id": 2, "category_id": 7, "bbox": box(20, 20)})
    area = evaluate_voc(ground_truth, detections[::-1])  # input order does not matter
    eleven = evaluate_voc(ground_truth, detections, use_07_metric=True)
    assert area.mean_ap == pytest.approx(17 / 30, abs=1e-12)
    assert eleven.mean_ap == pytest.approx(6.2 / 11, abs=1e-12)
    (result,) = area.per_class
    np.testing.assert_allclose(result.recall_curve, [0.25, 0.25, 0.5, 0.5, 0.75])
    np.testing.assert_allclose(result.precision_curve, [1, 1 / 2, 2 / 3, 1 / 2, 3 / 5])
    assert (result.true_positives, result.false_positives, result.num_ground_truth) == (3, 2, 4)
    assert result.recall == 0.75 and result.precision == pytest.approx(0.6)
    assert voc_ap(result.recall_curve, result.precision_curve, use_07_metric=False) == area.mean_ap


def test_voc_difficult_boxes_are_ignored() -> None:
    # G1 normal, G2 difficult. .9 on G2 -> ignored, .8 on G1 -> TP, .7 on G2 again -> ignored:
    # one counted detection, TP 1 of 1 box: AP 1. Without the flag G2 would count (2 boxes, 2 TP).
    for flag in ("difficult", "ignore", "iscrowd"):
        annotations = [{"bbox": box(0, 0)}, {"bbox": box(100, 0), flag: 1}]
        detections = [
            {"bbox": box(101, 0), "score": 0.9},
            {"bbox": box(1, 0), "score": 0.8},
            {"bbox": box(100, 1), "score": 0.7},
        ]
        ground_truth = voc_case(annotations, detections)
        for use_07_metric in (False, True):
            (result,) = evaluate_voc(ground_truth, detections, use_07_metric=use_07_metric).per_class
            assert result.ap == 1.0
            assert (result.true_positives, result.false_positives) == (1, 0)
            assert (result.num_ground_truth, result.num_difficult, result.num_detections) == (1, 1, 3)
            assert len(result.recall_curve) == 1


def test_voc_duplicates_are_false_positives_and_iou_threshold_is_strict() -> None:
    # G1, G2. .9 on G1 -> TP, .8 on G1 -> FP (duplicate), .7 on G2 -> TP, .6 overlapping G2 at IoU
    # exactly 0.5 -> FP (voc_eval.py needs IoU > 0.5). Recall .5 .5 1 1, precision 1 1/2 2/3 1/2.
    # Area: .5 * 1 + .5 * 2/3 = 5/6.  11-point: t = 0...0.5 (6 points) -> 1, t = .6...1 (5) -> 2/3: 28/33.
    annotations = [{"bbox": box(0, 0)}, {"bbox": box(100, 0)}]
    detections = [
        {"bbox": box(0, 0), "score": 0.9},
        {"bbox": box(0.5, 0), "score": 0.8},
        {"bbox": box(100, 0), "score": 0.7},
        {"bbox": box(100, 0, 5, 10), "score": 0.6},  # IoU 50 / 100
    ]
    ground_truth = voc_case(annotations, detections)
    (area,) = evaluate_voc(ground_truth, detections).per_class
    assert (area.true_positives, area.false_positives) == (2, 2)
    assert area.ap == pytest.approx(5 / 6, abs=1e-12)
    assert evaluate_voc(ground_truth, detections, use_07_metric=True).mean_ap == pytest.approx(28 / 33, abs=1e-12)
    (looser,) = evaluate_voc(ground_truth, detections, iou_threshold=0.45).per_class
    assert (looser.true_positives, looser.false_positives) == (2, 2)  # G2 is already taken: still a duplicate


def test_voc_ap_edge_cases() -> None:
    assert voc_ap([], [], use_07_metric=False) == 0.0
    assert voc_ap([], [], use_07_metric=True) == 0.0
    assert voc_ap([1.0], [1.0], use_07_metric=True) == 1.0
    # The reference's thresholds are np.arange(0, 1.1, 0.1): its 0.3 is 0.30000000000000004, so a recall of
    # exactly 0.3 reaches t = 0, 0.1, 0.2 only: 3/11.
    assert voc_ap([0.3], [1.0], use_07_metric=True) == pytest.approx(3 / 11)
    assert voc_ap([0.3], [1.0], use_07_metric=False) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="same length"):
        voc_ap([0.1, 0.2], [1.0], use_07_metric=False)


def reference_voc_eval(ground_truth: dict, detections: list[dict], category_id: int, use_07_metric: bool) -> float:
    """py-faster-rcnn's voc_eval.py loop, transcribed (continuous IoU instead of the +1 pixel convention)."""
    records, positives = {}, 0
    for annotation in ground_truth["annotations"]:
        if annotation["category_id"] != category_id:
            continue
        x, y, w, h = annotation["bbox"]
        record = records.setdefault(annotation["image_id"], {"bbox": [], "difficult": [], "det": []})
        record["bbox"].append([x, y, x + w, y + h])
        record["difficult"].append(bool(annotation.get("iscrowd", 0)))
        record["det"].append(False)
        positives += not annotation.get("iscrowd", 0)
    mine = [d for d in detections if d["category_id"] == category_id]
    order = np.argsort([-d["score"] for d in mine], kind="stable")
    tp, fp = np.zeros(len(mine)), np.zeros(len(mine))
    for rank, index in enumerate(order):
        detection = mine[index]
        record = records.get(detection["image_id"], {"bbox": [], "difficult": [], "det": []})
        x, y, w, h = detection["bbox"]
        overlap_max, best = -math.inf, -1
        if record["bbox"]:
            boxes = np.array(record["bbox"])
            inter_w = np.maximum(np.minimum(boxes[:, 2], x + w) - np.maximum(boxes[:, 0], x), 0)
            inter_h = np.maximum(np.minimum(boxes[:, 3], y + h) - np.maximum(boxes[:, 1], y), 0)
            inters = inter_w * inter_h
            unions = w * h + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) - inters
            overlaps = inters / unions
            overlap_max, best = overlaps.max(), overlaps.argmax()
        if overlap_max > 0.5:
            if not record["difficult"][best]:
                if not record["det"][best]:
                    tp[rank], record["det"][best] = 1, True
                else:
                    fp[rank] = 1
        else:
            fp[rank] = 1
    fp, tp = np.cumsum(fp), np.cumsum(tp)
    recall = tp / positives
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return voc_ap(recall, precision, use_07_metric)


def test_evaluate_voc_matches_voc_eval_transcription() -> None:
    ground_truth = make_ground_truth(seed=6)
    detections = make_detections(ground_truth, seed=7)
    for use_07_metric in (False, True):
        report = evaluate_voc(ground_truth, detections, use_07_metric=use_07_metric)
        for entry in report.per_class[:3]:
            expected = reference_voc_eval(ground_truth, detections, entry.category_id, use_07_metric)
            assert entry.ap == pytest.approx(expected, abs=1e-12)
        assert 0.2 < report.mean_ap < 1.0


# ---------------------------------------------------------------------------------------------- sweep, plots


def test_sweep_counts_and_monotone_map() -> None:
    ground_truth = make_ground_truth(seed=8)
    detections = make_detections(ground_truth, seed=9, low_scores=True)
    thresholds = (0.1, 0.01, 0.001, 0.0001)
    rows = sweep_thresholds(ground_truth, detections, thresholds)
    assert [row.threshold for row in rows] == list(thresholds)
    assert [row.num_detections for row in rows] == [sum(d["score"] >= t for d in detections) for t in thresholds]
    for name in ("coco_ap", "coco_ap50", "voc_map"):
        values = [getattr(row, name) for row in rows]  # thresholds fall along the rows: mAP must not drop
        assert all(later >= earlier for earlier, later in itertools.pairwise(values)), (name, values)
        assert values[-1] > values[0]
    full = evaluate_coco(ground_truth, [d for d in detections if d["score"] >= 0.001])
    assert rows[2].coco_ap == full.ap and rows[2].coco_ap50 == full.ap50
    table = format_markdown_table(rows).splitlines()
    assert table[0] == "| score ≥ | boxes | mAP@[.5:.95] | mAP@0.5 | VOC mAP@0.5 |"
    assert table[4] == f"| 0.001 | {rows[2].num_detections} | {full.ap:.3f} | {full.ap50:.3f} | {rows[2].voc_map:.3f} |"
    assert len(table) == 6


def test_pr_curves_data_and_png(tmp_path: Path) -> None:
    ground_truth = make_ground_truth()
    report = evaluate_coco(ground_truth, make_detections(ground_truth))
    curves = plot_pr_curves(report, tmp_path / "plots" / "pr.png")
    assert (tmp_path / "plots" / "pr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert curves.precision.shape == (4, 101) and curves.recall.shape == (101,)
    assert np.isnan(curves.precision[3]).all() and curves.average_precision[3] is None
    assert curves.mean_average_precision == pytest.approx(report.ap50, abs=1e-12)
    assert np.nanmean(curves.mean_precision) == pytest.approx(report.ap50, abs=1e-12)
    assert pr_curves(report, 0.75).mean_average_precision == pytest.approx(report.stats["AP75"], abs=1e-12)
    with pytest.raises(ValueError, match="not one of the report's IoU thresholds"):
        pr_curves(report, 0.42)
