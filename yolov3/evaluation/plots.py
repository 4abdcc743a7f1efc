"""Precision-recall curves from a :class:`~yolov3.evaluation.coco.CocoReport`, as data and as a PNG.

The curves are pycocotools' interpolated precision at the 101 recall thresholds, for one IoU threshold
(0.5 by default), area "all" and 100 detections per image. :func:`pr_curves` gives the numbers (for
TensorBoard's ``add_pr_curve_raw`` or a notebook); :func:`plot_pr_curves` draws them with matplotlib's
object API (a ``Figure`` with the Agg canvas: no pyplot, no global backend change).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from yolov3.evaluation.coco import CocoReport

logger = logging.getLogger(__name__)

LEGEND_MAX_CLASSES = 20  # more classes than this: per-class curves are drawn thin and unlabeled


@dataclass(frozen=True)
class PrCurves:
    """Per-class and mean precision at each recall threshold; NaN for classes without ground truth."""

    iou_threshold: float
    recall: np.ndarray = field(repr=False, compare=False)  # (R,) recall thresholds 0..1
    precision: np.ndarray = field(repr=False, compare=False)  # (K, R) per class
    mean_precision: np.ndarray = field(repr=False, compare=False)  # (R,) over classes with ground truth
    category_ids: tuple[int, ...] = ()
    names: tuple[str, ...] = ()
    average_precision: tuple[float | None, ...] = ()  # per class, the mean of its precision row

    @property
    def mean_average_precision(self) -> float | None:
        """The mean of the defined per-class APs (the report's AP at this IoU)."""
        values = [value for value in self.average_precision if value is not None]
        return float(np.mean(values)) if values else None


def pr_curves(report: CocoReport, iou_threshold: float = 0.5) -> PrCurves:
    """The precision-recall curves of ``report`` at ``iou_threshold`` (one of its IoU thresholds)."""
    matches = np.flatnonzero(np.isclose(report.iou_thresholds, iou_threshold))
    if matches.size == 0:
        choices = ", ".join(f"{value:.2f}" for value in report.iou_thresholds)
        raise ValueError(f"iou_threshold {iou_threshold} is not one of the report's IoU thresholds ({choices})")
    area_all = report.area_labels.index("all")
    precision = np.array(report.precision[matches[0], :, :, area_all, -1], dtype=np.float64).T  # (R, K) -> (K, R)
    precision[precision < 0] = np.nan  # -1: no ground truth for this class
    defined = np.any(~np.isnan(precision), axis=1)  # (K,): classes with ground truth
    mean = precision[defined].mean(axis=0) if defined.any() else np.full(precision.shape[1], np.nan)
    average = tuple(float(row.mean()) if ok else None for row, ok in zip(precision, defined, strict=True))
    return PrCurves(
        iou_threshold=float(report.iou_thresholds[matches[0]]),
        recall=np.array(report.recall_thresholds, dtype=np.float64),
        precision=precision,
        mean_precision=mean,
        category_ids=tuple(entry.category_id for entry in report.per_class),
        names=tuple(entry.name for entry in report.per_class),
        average_precision=average,
    )


def _draw(curves: PrCurves) -> Figure:
    figure = Figure(figsize=(9, 6), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    labeled = len(curves.names) <= LEGEND_MAX_CLASSES
    for name, row, value in zip(curves.names, curves.precision, curves.average_precision, strict=True):
        if value is None:
            continue
        if labeled:
            axes.plot(curves.recall, row, linewidth=1, label=f"{name} {value:.3f}")
        else:
            axes.plot(curves.recall, row, linewidth=0.5, color="grey", alpha=0.5)
    if curves.mean_average_precision is not None:
        axes.plot(
            curves.recall,
            curves.mean_precision,
            linewidth=3,
            color="blue",
            label=f"all classes {curves.mean_average_precision:.3f} mAP@{curves.iou_threshold:.2f}",
        )
    axes.set_xlabel("Recall")
    axes.set_ylabel("Precision")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.01)
    axes.set_title(f"Precision-recall at IoU {curves.iou_threshold:.2f}")
    axes.grid(True, alpha=0.3)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(loc="upper left", bbox_to_anchor=(1.02, 1), fontsize="small")
    figure.tight_layout()
    return figure


def plot_pr_curves(report: CocoReport, path: str | os.PathLike, iou_threshold: float = 0.5) -> PrCurves:
    """Draw the per-class and mean precision-recall curves of ``report`` to the PNG ``path``; return the data."""
    curves = pr_curves(report, iou_threshold)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _draw(curves).savefig(path, format="png")
    logger.info("wrote precision-recall curves to %s", path)
    return curves
