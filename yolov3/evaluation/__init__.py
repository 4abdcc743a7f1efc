"""Evaluation from COCO-format JSON: pycocotools COCO AP, VOC AP@0.5, confidence sweeps and PR curves.

Inputs are shared by every evaluator: a COCO instances ground truth (mapping or JSON path) and a COCO
results detection list (list or JSON path); see :mod:`yolov3.evaluation.inputs`. PR-curve plots are in
:mod:`yolov3.evaluation.plots` (not imported here, so that evaluating does not import matplotlib).
"""

from yolov3.evaluation.coco import ClassAP, CocoReport, evaluate_coco
from yolov3.evaluation.inputs import EvaluationInputError, load_detections, load_ground_truth
from yolov3.evaluation.sweep import SweepRow, format_markdown_table, sweep_thresholds
from yolov3.evaluation.voc import VocClassResult, VocReport, evaluate_voc, voc_ap

__all__ = [
    "ClassAP",
    "CocoReport",
    "EvaluationInputError",
    "SweepRow",
    "VocClassResult",
    "VocReport",
    "evaluate_coco",
    "evaluate_voc",
    "format_markdown_table",
    "load_detections",
    "load_ground_truth",
    "sweep_thresholds",
    "voc_ap",
]
