"""Confidence-threshold sweep: boxes kept and mAP at each score threshold, as a table for a paper.

Detectors are scored at a very low threshold (0.001 is the COCO convention) because AP only grows as
low-scoring boxes are added; this table shows how much each decade of threshold is worth::

    rows = sweep_thresholds("instances_val2017.json", "results.json")
    print(format_markdown_table(rows))
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from yolov3.evaluation.coco import evaluate_coco
from yolov3.evaluation.inputs import (
    DetectionsSource,
    GroundTruthSource,
    filter_by_score,
    load_detections,
    load_ground_truth,
    select_images,
    source_name,
)
from yolov3.evaluation.voc import evaluate_voc

logger = logging.getLogger(__name__)

DEFAULT_THRESHOLDS: tuple[float, ...] = (0.1, 0.01, 0.001, 0.0001)


@dataclass(frozen=True)
class SweepRow:
    """The evaluation of the detections whose score is at least ``threshold``."""

    threshold: float
    num_detections: int  # boxes kept (score >= threshold) in the evaluated images
    coco_ap: float  # AP@[.5:.95]
    coco_ap50: float  # AP@0.5
    voc_map: float | None  # VOC AP@0.5 (area metric, or 11-point with use_07_metric); None if not computed

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON."""
        return dict(vars(self))


def sweep_thresholds(
    ground_truth: GroundTruthSource,
    detections: DetectionsSource,
    thresholds: Iterable[float] = DEFAULT_THRESHOLDS,
    include_voc: bool = True,
    use_07_metric: bool = False,
    image_ids: Iterable[int] | None = None,
) -> list[SweepRow]:
    """One :class:`SweepRow` per threshold (in the given order): COCO AP, AP50 and VOC mAP@0.5."""
    ground_truth_name = source_name(ground_truth, "the ground truth")
    dataset = load_ground_truth(ground_truth)
    checked = load_detections(detections, dataset, ground_truth_name)
    selected = select_images(dataset, image_ids, ground_truth_name)
    selected_set = set(selected)
    in_images = [detection for detection in checked if detection["image_id"] in selected_set]
    rows = []
    for threshold in thresholds:
        kept = filter_by_score(in_images, float(threshold))
        coco = evaluate_coco(dataset, kept, selected)
        voc = evaluate_voc(dataset, kept, use_07_metric=use_07_metric, image_ids=selected) if include_voc else None
        rows.append(SweepRow(float(threshold), len(kept), coco.ap, coco.ap50, voc.mean_ap if voc else None))
        logger.info("threshold %g: %d boxes, AP %.4f, AP50 %.4f", threshold, len(kept), coco.ap, coco.ap50)
    return rows


def _format_value(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def format_markdown_table(rows: Sequence[SweepRow], use_07_metric: bool = False) -> str:
    """A GitHub-markdown table of the sweep (the VOC column only when it was computed)."""
    with_voc = any(row.voc_map is not None for row in rows)
    voc_title = "VOC07 mAP@0.5" if use_07_metric else "VOC mAP@0.5"
    header = ["score ≥", "boxes", "mAP@[.5:.95]", "mAP@0.5", *([voc_title] if with_voc else [])]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---:"] * len(header)) + "|"]
    for row in rows:
        cells = [f"{row.threshold:g}", str(row.num_detections)]
        cells += [_format_value(row.coco_ap), _format_value(row.coco_ap50)]
        if with_voc:
            cells.append(_format_value(row.voc_map))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
