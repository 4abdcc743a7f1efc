"""PASCAL VOC box evaluation: per-class AP at one IoU threshold (0.5), from COCO-format inputs.

The semantics are those of py-faster-rcnn's ``voc_eval.py`` (also used by Detectron2's VOC evaluator):

- per class, all detections are ranked by descending score (ties keep input order);
- each detection looks at the ground-truth box of its image and class with the highest IoU (already
  matched boxes included); if that IoU is above ``iou_threshold`` (strictly) and the box is *difficult*,
  the detection is ignored (neither TP nor FP); if the box is not yet matched it is a TP and the box is
  now matched; otherwise (a duplicate, or IoU too low) it is a FP;
- recall is TP / (non-difficult boxes), precision TP / (TP + FP);
- AP is :func:`voc_ap`: the 11-point VOC2007 metric or the VOC2010+ area under the interpolated curve.

Differences from the reference, because inputs are COCO-format boxes in continuous pixel coordinates:
IoU is ``torchvision.ops.box_iou`` (no "+1" pixel convention); a ground-truth box is ignored when its
annotation has a true ``difficult``, ``ignore`` or ``iscrowd``. A class without (non-difficult) ground
truth has AP None and is left out of the mAP.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torchvision.ops import box_iou

from yolov3.evaluation.inputs import (
    DetectionsSource,
    GroundTruthSource,
    load_detections,
    load_ground_truth,
    select_images,
    source_name,
)

logger = logging.getLogger(__name__)

TRUE_POSITIVE, FALSE_POSITIVE, IGNORED = 1, 0, -1


def voc_ap(recall: Sequence[float] | np.ndarray, precision: Sequence[float] | np.ndarray, use_07_metric: bool) -> float:
    """VOC average precision of a precision/recall curve (points in descending-score order).

    ``use_07_metric``: the VOC2007 11-point metric, the mean over t in 0, 0.1, ..., 1 of the highest
    precision at recall >= t (0 when no point reaches t). The thresholds are ``np.arange(0, 1.1, 0.1)``
    as in the reference, so 0.3, 0.6 and 0.7 are a hair above their decimal value.
    Otherwise the VOC2010+ metric: the area under the curve whose precision at each recall is the highest
    precision at that recall or beyond (the curve is closed with (0, 0) and (1, 0)).
    """
    recall = np.asarray(recall, dtype=np.float64).reshape(-1)
    precision = np.asarray(precision, dtype=np.float64).reshape(-1)
    if recall.shape != precision.shape:
        raise ValueError(f"recall and precision must have the same length, got {recall.size} and {precision.size}")
    if use_07_metric:
        total = 0.0
        for threshold in np.arange(0.0, 1.1, 0.1):
            reached = recall >= threshold
            total += float(np.max(precision[reached])) if reached.any() else 0.0
        return total / 11.0
    padded_recall = np.concatenate(([0.0], recall, [1.0]))
    envelope = np.concatenate(([0.0], precision, [0.0]))
    envelope = np.maximum.accumulate(envelope[::-1])[::-1]  # highest precision at this recall or beyond
    steps = np.flatnonzero(padded_recall[1:] != padded_recall[:-1])
    return float(np.sum((padded_recall[steps + 1] - padded_recall[steps]) * envelope[steps + 1]))


def match_detections(
    detection_boxes: np.ndarray, ground_truth_boxes: np.ndarray, ground_truth_ignored: np.ndarray, iou_threshold: float
) -> np.ndarray:
    """Label one image's detections of one class, given in descending-score order.

    Boxes are (D, 4) and (G, 4) ``x1, y1, x2, y2``; ``ground_truth_ignored`` (G,) marks difficult boxes.
    Returns (D,) int8: ``TRUE_POSITIVE`` (1), ``FALSE_POSITIVE`` (0) or ``IGNORED`` (-1).
    """
    labels = np.full(len(detection_boxes), FALSE_POSITIVE, dtype=np.int8)
    if len(detection_boxes) == 0 or len(ground_truth_boxes) == 0:
        return labels
    ious = box_iou(torch.as_tensor(detection_boxes, dtype=torch.float64), torch.as_tensor(ground_truth_boxes))
    ious = np.nan_to_num(ious.numpy(), nan=0.0)  # (D, G); 0/0 for two empty boxes counts as no overlap
    best_box, best_iou = ious.argmax(axis=1), ious.max(axis=1)
    matched = np.zeros(len(ground_truth_boxes), dtype=bool)
    for index in range(len(detection_boxes)):
        if best_iou[index] <= iou_threshold:
            continue
        box = best_box[index]
        if ground_truth_ignored[box]:
            labels[index] = IGNORED
        elif not matched[box]:
            labels[index] = TRUE_POSITIVE
            matched[box] = True
    return labels


@dataclass(frozen=True)
class VocClassResult:
    """One class: AP, final recall and precision, counts, and the precision/recall curve."""

    category_id: int
    name: str
    ap: float | None  # None when the class has no non-difficult ground truth
    recall: float | None  # recall with every detection kept
    precision: float | None  # precision with every detection kept (None without detections)
    num_ground_truth: int  # non-difficult boxes
    num_difficult: int
    num_detections: int
    true_positives: int
    false_positives: int
    recall_curve: np.ndarray = field(repr=False, compare=False)  # (N,) over ranked non-ignored detections
    precision_curve: np.ndarray = field(repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON (no curves)."""
        return {key: value for key, value in vars(self).items() if not key.endswith("_curve")}


@dataclass(frozen=True)
class VocReport:
    """The outcome of :func:`evaluate_voc`: per-class results and their mean."""

    per_class: tuple[VocClassResult, ...]
    iou_threshold: float
    use_07_metric: bool
    num_images: int

    @property
    def metric_name(self) -> str:
        """``VOC07 11-point`` or ``VOC area``."""
        return "VOC07 11-point" if self.use_07_metric else "VOC area"

    @property
    def mean_ap(self) -> float | None:
        """The mean of the per-class APs that are defined (None when no class has ground truth)."""
        values = [entry.ap for entry in self.per_class if entry.ap is not None]
        return float(np.mean(values)) if values else None

    def format_table(self) -> str:
        """A per-class table and the mAP line."""
        return format_voc_tables([self])

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON."""
        return {
            "metric": self.metric_name,
            "iou_threshold": self.iou_threshold,
            "mAP": self.mean_ap,
            "per_class": [entry.to_dict() for entry in self.per_class],
            "num_images": self.num_images,
        }


def _format_value(value: float | None) -> str:
    return "-" if value is None else f"{value:0.3f}"


def format_voc_tables(reports: Sequence[VocReport]) -> str:
    """One per-class table with an AP column per report (same inputs, e.g. the 07 and area metrics)."""
    if not reports:
        raise ValueError("format_voc_tables needs at least one report")
    first = reports[0]
    width = max([len("category"), len("mAP"), *(len(entry.name) for entry in first.per_class)])
    titles = [f"AP{round(report.iou_threshold * 100)} ({report.metric_name})" for report in reports]
    widths = [max(len(title), 6) for title in titles]
    header = f"{'category':<{width}}  {'boxes':>6}  {'difficult':>9}  {'detections':>10}  {'recall':>6}"
    header += "".join(f"  {title:>{width}}" for title, width in zip(titles, widths, strict=True))
    rows = [header, "-" * len(header)]
    for index, entry in enumerate(first.per_class):
        row = (
            f"{entry.name:<{width}}  {entry.num_ground_truth:>6}  {entry.num_difficult:>9}  "
            f"{entry.num_detections:>10}  {_format_value(entry.recall):>6}"
        )
        row += "".join(
            f"  {_format_value(report.per_class[index].ap):>{width}}"
            for report, width in zip(reports, widths, strict=True)
        )
        rows.append(row)
    summary = f"{'mAP':<{width}}  {'':>6}  {'':>9}  {'':>10}  {'':>6}"
    summary += "".join(
        f"  {_format_value(report.mean_ap):>{width}}" for report, width in zip(reports, widths, strict=True)
    )
    return "\n".join([*rows, "-" * len(header), summary])


def _xyxy(box: Sequence[float]) -> list[float]:
    x, y, width, height = box
    return [x, y, x + width, y + height]


def _is_ignored(annotation: dict[str, Any]) -> bool:
    return any(bool(annotation.get(key, False)) for key in ("difficult", "ignore", "iscrowd"))


def _evaluate_class(
    category: dict[str, Any],
    detections: list[dict[str, Any]],
    ground_truth: dict[int, tuple[np.ndarray, np.ndarray]],
    iou_threshold: float,
    use_07_metric: bool,
) -> VocClassResult:
    """AP of one class; ``ground_truth`` maps image id -> (boxes (G, 4) xyxy, ignored (G,))."""
    scores = np.array([detection["score"] for detection in detections], dtype=np.float64)
    order = np.argsort(-scores, kind="stable")  # ranking; ties keep input order
    positions_by_image: dict[int, list[int]] = defaultdict(list)
    for position, index in enumerate(order):
        positions_by_image[detections[index]["image_id"]].append(position)
    labels = np.full(len(detections), FALSE_POSITIVE, dtype=np.int8)  # in ranking order
    empty = (np.zeros((0, 4)), np.zeros(0, dtype=bool))
    for image_id, positions in positions_by_image.items():
        boxes = np.array([_xyxy(detections[order[position]]["bbox"]) for position in positions], dtype=np.float64)
        ground_truth_boxes, ignored = ground_truth.get(image_id, empty)
        labels[positions] = match_detections(boxes, ground_truth_boxes, ignored, iou_threshold)

    num_ground_truth = int(sum(int((~ignored).sum()) for _, ignored in ground_truth.values()))
    num_difficult = int(sum(int(ignored.sum()) for _, ignored in ground_truth.values()))
    counted = labels[labels != IGNORED]
    true_positives = np.cumsum(counted == TRUE_POSITIVE).astype(np.float64)
    false_positives = np.cumsum(counted == FALSE_POSITIVE).astype(np.float64)
    precision = true_positives / np.maximum(true_positives + false_positives, np.finfo(np.float64).eps)
    recall = true_positives / num_ground_truth if num_ground_truth else np.zeros_like(true_positives)
    defined = num_ground_truth > 0
    return VocClassResult(
        category_id=category["id"],
        name=category["name"],
        ap=voc_ap(recall, precision, use_07_metric) if defined else None,
        recall=(float(recall[-1]) if recall.size else 0.0) if defined else None,
        precision=float(precision[-1]) if precision.size else None,
        num_ground_truth=num_ground_truth,
        num_difficult=num_difficult,
        num_detections=len(detections),
        true_positives=int(true_positives[-1]) if true_positives.size else 0,
        false_positives=int(false_positives[-1]) if false_positives.size else 0,
        recall_curve=recall,
        precision_curve=precision,
    )


def evaluate_voc(
    ground_truth: GroundTruthSource,
    detections: DetectionsSource,
    iou_threshold: float = 0.5,
    use_07_metric: bool = False,
    image_ids: Iterable[int] | None = None,
) -> VocReport:
    """VOC AP per class and mAP of ``detections`` against ``ground_truth`` (COCO-format, see module doc).

    Raises :class:`~yolov3.evaluation.inputs.EvaluationInputError` for bad input.
    """
    if not 0.0 <= iou_threshold < 1.0:
        raise ValueError(f"iou_threshold must be in [0, 1), got {iou_threshold}")
    ground_truth_name = source_name(ground_truth, "the ground truth")
    dataset = load_ground_truth(ground_truth)
    checked = load_detections(detections, dataset, ground_truth_name)
    selected = set(select_images(dataset, image_ids, ground_truth_name))

    annotations_by_class: dict[int, dict[int, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for annotation in dataset["annotations"]:
        if annotation["image_id"] in selected:
            annotations_by_class[annotation["category_id"]][annotation["image_id"]].append(annotation)
    detections_by_class: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for detection in checked:
        if detection["image_id"] in selected:
            detections_by_class[detection["category_id"]].append(detection)

    results = []
    for category in sorted(dataset["categories"], key=lambda category: category["id"]):
        class_ground_truth = {
            image_id: (
                np.array([_xyxy(a["bbox"]) for a in annotations], dtype=np.float64).reshape(-1, 4),
                np.array([_is_ignored(a) for a in annotations], dtype=bool),
            )
            for image_id, annotations in annotations_by_class[category["id"]].items()
        }
        results.append(
            _evaluate_class(
                category, detections_by_class[category["id"]], class_ground_truth, iou_threshold, use_07_metric
            )
        )
    report = VocReport(tuple(results), iou_threshold, use_07_metric, len(selected))
    logger.info("%s mAP@%.2f %s on %d images", report.metric_name, iou_threshold, report.mean_ap, len(selected))
    return report
