"""COCO box evaluation through pycocotools: the 12 standard numbers, per-class AP and the precision array.

pycocotools' ``COCO`` and ``COCOeval`` do all the matching and accumulation (crowd regions, area ranges,
100 detections per image and class, 101-point interpolated precision); this module only checks the
inputs, silences pycocotools' prints (they go to the log at DEBUG level), handles an empty detection list
(``COCO.loadRes`` cannot) and packs the results in a :class:`CocoReport`::

    report = evaluate_coco("instances_val2017.json", "results.json")
    print(report.format_table())
    report.stats["AP"], report.stats["AP50"], report.per_class[0].ap
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from yolov3.evaluation.inputs import (
    DetectionsSource,
    GroundTruthSource,
    load_detections,
    load_ground_truth,
    select_images,
    source_name,
)

logger = logging.getLogger(__name__)

# The 12 numbers of COCOeval.summarize() for boxes, in its order: (name, AP or AR, IoU, area, max detections).
COCO_STATS: tuple[tuple[str, str, float | None, str, int], ...] = (
    ("AP", "AP", None, "all", 100),
    ("AP50", "AP", 0.5, "all", 100),
    ("AP75", "AP", 0.75, "all", 100),
    ("APs", "AP", None, "small", 100),
    ("APm", "AP", None, "medium", 100),
    ("APl", "AP", None, "large", 100),
    ("AR1", "AR", None, "all", 1),
    ("AR10", "AR", None, "all", 10),
    ("AR100", "AR", None, "all", 100),
    ("ARs", "AR", None, "small", 100),
    ("ARm", "AR", None, "medium", 100),
    ("ARl", "AR", None, "large", 100),
)
STAT_NAMES: tuple[str, ...] = tuple(name for name, *_ in COCO_STATS)


@dataclass(frozen=True)
class ClassAP:
    """One category's COCO AP; ``ap`` and ``ap50`` are None when the category has no (non-crowd) ground truth."""

    category_id: int
    name: str
    ap: float | None  # AP@[.5:.95], area all, 100 detections
    ap50: float | None  # AP@0.5, area all, 100 detections
    num_ground_truth: int  # non-crowd boxes in the evaluated images
    num_detections: int  # detections in the evaluated images


@dataclass(frozen=True)
class CocoReport:
    """The outcome of :func:`evaluate_coco`.

    ``precision`` is ``COCOeval.eval['precision']`` (read-only), shape (T, R, K, A, M): IoU thresholds
    ``iou_thresholds`` (0.50..0.95), recall thresholds ``recall_thresholds`` (0..1 by 0.01), categories in
    the order of ``per_class``, area ranges ``area_labels`` (all, small, medium, large) and
    ``max_detections`` (1, 10, 100); -1 marks categories without ground truth.
    """

    stats: dict[str, float]  # the 12 numbers by name (STAT_NAMES), -1 where pycocotools gives -1
    per_class: tuple[ClassAP, ...]
    precision: np.ndarray = field(repr=False, compare=False)
    iou_thresholds: np.ndarray = field(repr=False, compare=False)
    recall_thresholds: np.ndarray = field(repr=False, compare=False)
    area_labels: tuple[str, ...] = ("all", "small", "medium", "large")
    max_detections: tuple[int, ...] = (1, 10, 100)
    num_images: int = 0
    num_detections: int = 0

    @property
    def ap(self) -> float:
        """AP@[.5:.95] (the COCO mAP)."""
        return self.stats["AP"]

    @property
    def ap50(self) -> float:
        """AP@0.5."""
        return self.stats["AP50"]

    def stats_array(self) -> np.ndarray:
        """The 12 numbers in ``COCOeval.stats`` order."""
        return np.array([self.stats[name] for name in STAT_NAMES])

    def format_table(self, per_class: bool = True) -> str:
        """The 12 lines ``COCOeval.summarize()`` prints, then (``per_class``) a per-category AP table."""
        first, last = self.iou_thresholds[0], self.iou_thresholds[-1]
        lines = []
        for name, kind, iou, area, max_detections in COCO_STATS:
            title = "Average Precision" if kind == "AP" else "Average Recall"
            iou_text = f"{first:0.2f}:{last:0.2f}" if iou is None else f"{iou:0.2f}"
            lines.append(
                f" {title:<18} ({kind}) @[ IoU={iou_text:<9} | area={area:>6s} | maxDets={max_detections:>3d} ]"
                f" = {self.stats[name]:0.3f}"
            )
        if per_class:
            lines += ["", format_class_table(self.per_class)]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON: the 12 numbers and the per-class table (None where undefined)."""
        return {
            "stats": dict(self.stats),
            "per_class": [vars(entry).copy() for entry in self.per_class],
            "num_images": self.num_images,
            "num_detections": self.num_detections,
        }


def _format_value(value: float | None) -> str:
    return "-" if value is None else f"{value:0.3f}"


def format_class_table(per_class: Sequence[ClassAP]) -> str:
    """A fixed-width table of per-category AP@[.5:.95] and AP@0.5 with box counts."""
    width = max([len("category"), *(len(entry.name) for entry in per_class)])
    header = f"{'category':<{width}}  {'id':>5}  {'AP':>6}  {'AP50':>6}  {'boxes':>7}  {'detections':>10}"
    rows = [header, "-" * len(header)]
    for entry in per_class:
        rows.append(
            f"{entry.name:<{width}}  {entry.category_id:>5}  {_format_value(entry.ap):>6}  "
            f"{_format_value(entry.ap50):>6}  {entry.num_ground_truth:>7}  {entry.num_detections:>10}"
        )
    return "\n".join(rows)


@contextlib.contextmanager
def _quiet_pycocotools():
    """Send pycocotools' prints to the log (DEBUG) instead of stdout."""
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        yield
    if captured.getvalue().strip():
        logger.debug("pycocotools:\n%s", captured.getvalue().rstrip())


def _read_only(array: np.ndarray) -> np.ndarray:
    copied = np.array(array, dtype=np.float64)
    copied.setflags(write=False)
    return copied


def _mean_valid(values: np.ndarray) -> float | None:
    valid = values[values > -1]
    return float(np.mean(valid)) if valid.size else None


def _per_class(
    coco_eval: COCOeval, ground_truth: Mapping[str, Any], detections: Iterable[Mapping[str, Any]], image_ids: list[int]
) -> tuple[ClassAP, ...]:
    params = coco_eval.params
    precision = coco_eval.eval["precision"]  # (T, R, K, A, M)
    iou50 = int(np.argmin(np.abs(params.iouThrs - 0.5)))
    area_all = params.areaRngLbl.index("all")
    names = {category["id"]: category["name"] for category in ground_truth["categories"]}
    selected = set(image_ids)
    boxes = Counter(
        a["category_id"] for a in ground_truth["annotations"] if a["image_id"] in selected and not a["iscrowd"]
    )
    found = Counter(d["category_id"] for d in detections if d["image_id"] in selected)
    entries = []
    for index, category_id in enumerate(params.catIds):
        category_precision = precision[:, :, index, area_all, -1]  # (T, R) at 100 detections
        entries.append(
            ClassAP(
                category_id=int(category_id),
                name=names[category_id],
                ap=_mean_valid(category_precision),
                ap50=_mean_valid(category_precision[iou50]),
                num_ground_truth=boxes[category_id],
                num_detections=found[category_id],
            )
        )
    return tuple(entries)


def _results_coco(coco_ground_truth: COCO, detections: list[dict[str, Any]]) -> COCO:
    """``coco_ground_truth.loadRes(detections)``, which also works for an empty list."""
    if detections:
        return coco_ground_truth.loadRes(detections)
    results = COCO()
    results.dataset = {
        "images": list(coco_ground_truth.dataset["images"]),
        "categories": copy.deepcopy(coco_ground_truth.dataset["categories"]),
        "annotations": [],
    }
    results.createIndex()
    return results


def run_cocoeval(ground_truth: Mapping[str, Any], detections: list[dict[str, Any]], image_ids: list[int]) -> COCOeval:
    """COCOeval (bbox) evaluated and accumulated on checked inputs (from :mod:`yolov3.evaluation.inputs`).

    ``detections`` are handed to pycocotools, which adds keys to them: pass a copy you no longer need.
    """
    with _quiet_pycocotools():
        coco_ground_truth = COCO()
        coco_ground_truth.dataset = copy.deepcopy(dict(ground_truth))
        coco_ground_truth.createIndex()
        coco_results = _results_coco(coco_ground_truth, detections)
        coco_eval = COCOeval(coco_ground_truth, coco_results, iouType="bbox")
        coco_eval.params.imgIds = list(image_ids)
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval


def evaluate_coco(
    ground_truth: GroundTruthSource,
    detections: DetectionsSource,
    image_ids: Iterable[int] | None = None,
) -> CocoReport:
    """COCO box AP of ``detections`` against ``ground_truth``, computed by pycocotools.

    ``ground_truth`` is a COCO instances mapping or JSON path, ``detections`` a COCO results list or JSON
    path (see :mod:`yolov3.evaluation.inputs`); ``image_ids`` restricts the evaluation to those images
    (default: every image of the ground truth, with or without boxes). An empty detection list gives zeros
    (-1 where pycocotools has no ground truth to score). Raises
    :class:`~yolov3.evaluation.inputs.EvaluationInputError` for bad input.
    """
    ground_truth_name = source_name(ground_truth, "the ground truth")
    dataset = load_ground_truth(ground_truth)
    checked = load_detections(detections, dataset, ground_truth_name)
    selected = select_images(dataset, image_ids, ground_truth_name)
    coco_eval = run_cocoeval(dataset, copy.deepcopy(checked), selected)
    stats = {name: float(value) for name, value in zip(STAT_NAMES, coco_eval.stats, strict=True)}
    precision, iou_thresholds, recall_thresholds = (
        _read_only(array) for array in (coco_eval.eval["precision"], coco_eval.params.iouThrs, coco_eval.params.recThrs)
    )
    selected_set = set(selected)
    report = CocoReport(
        stats=stats,
        per_class=_per_class(coco_eval, dataset, checked, selected),
        precision=precision,
        iou_thresholds=iou_thresholds,
        recall_thresholds=recall_thresholds,
        area_labels=tuple(coco_eval.params.areaRngLbl),
        max_detections=tuple(int(value) for value in coco_eval.params.maxDets),
        num_images=len(selected),
        num_detections=sum(1 for detection in checked if detection["image_id"] in selected_set),
    )
    logger.info("COCO AP %.4f, AP50 %.4f on %d images", report.ap, report.ap50, report.num_images)
    return report
