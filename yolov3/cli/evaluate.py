"""``python -m yolov3.evaluate``: score a COCO results JSON against COCO ground truth (pycocotools, VOC).

Examples::

    python -m yolov3.evaluate --weights logs/bccd/best.pt --data configs/bccd.yaml --split test --plots runs/eval
    python -m yolov3.evaluate --weights model-int8.onnx --data configs/bccd.yaml   # also .yolov3c, --cfg + .weights
    python -m yolov3.evaluate --gt instances_val2017.json --detections results.json --per-class
    python -m yolov3.evaluate --gt voc2007_test.json --detections results.json --voc --voc07
    python -m yolov3.evaluate --gt ann.json --detections results.json --sweep --plots runs/eval --json-out report.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from yolov3.cli.runner import command, configure_logging
from yolov3.evaluation.coco import evaluate_coco
from yolov3.evaluation.dataset_run import DatasetEvaluationSettings, evaluate_on_dataset, read_data_source
from yolov3.evaluation.detection_grid import save_detection_grid
from yolov3.evaluation.inputs import load_detections, load_ground_truth
from yolov3.evaluation.plots import plot_pr_curves
from yolov3.evaluation.sweep import DEFAULT_THRESHOLDS, format_markdown_table, sweep_thresholds
from yolov3.evaluation.voc import evaluate_voc, format_voc_tables
from yolov3.inference.model_loading import load_inference_model
from yolov3.inference.precision import PRECISIONS


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m yolov3.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--gt", type=Path, help="COCO instances JSON (ground truth), with --detections")
    parser.add_argument("--detections", type=Path, help="COCO results JSON (detections), with --gt")
    parser.add_argument(
        "--weights", type=Path,
        help="detect with these weights: a checkpoint, a compressed .yolov3c, an ONNX graph from python -m "
        "yolov3.export (.onnx: fp32, fp16 or int8, run by ONNX Runtime), or Darknet .weights (with --cfg or --model)",
    )  # fmt: skip
    parser.add_argument("--data", type=Path, help="with --weights: a dataset YAML or a training config")
    parser.add_argument("--split", choices=("train", "val", "test"), default="val", help="split of --data")
    parser.add_argument("--cfg", type=Path, help="the Darknet .cfg of Darknet --weights")
    parser.add_argument("--model", help="the registered model of Darknet --weights")
    parser.add_argument("--num-classes", type=int, help="classes of --model")
    parser.add_argument("--img-size", type=int, help="input size (default: the config's, else the model's)")
    parser.add_argument("--conf", type=float, help="score threshold (default: the config's eval, else 0.001)")
    parser.add_argument("--iou", type=float, help="NMS IoU threshold (default: the config's eval, else 0.6)")
    parser.add_argument("--max-det", type=int, help="detections per image (default: the config's eval, else 300)")
    parser.add_argument("--batch-size", type=int, help="images per forward pass")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--onnx-threads", type=int, help="ONNX Runtime threads of an .onnx --weights (default: its)")
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="with --weights: fp32 (exact, default), or bf16/fp16 (autocast, stem conv fp32, BN fused, channels_last)",
    )
    parser.add_argument("--voc", action="store_true", help="also VOC AP@0.5 per class, area (VOC2010+) metric")
    parser.add_argument("--voc07", action="store_true", help="also VOC AP@0.5 per class, 11-point VOC2007 metric")
    parser.add_argument("--sweep", action="store_true", help="table of boxes and mAP per confidence threshold")
    parser.add_argument(
        "--sweep-thresholds",
        type=float,
        nargs="+",
        default=list(DEFAULT_THRESHOLDS),
        metavar="SCORE",
        help=f"thresholds for --sweep (default: {' '.join(map(str, DEFAULT_THRESHOLDS))})",
    )
    parser.add_argument("--per-class", action="store_true", help="print COCO AP and AP50 per class")
    parser.add_argument("--plots", type=Path, metavar="DIR", help="write precision-recall curves (PNG) to DIR")
    parser.add_argument("--json-out", type=Path, metavar="FILE", help="write every number as JSON to FILE")
    parser.add_argument("--verbose", action="store_true", help="log progress (and pycocotools' output)")
    args = parser.parse_args(argv)
    if args.weights is not None:
        if args.data is None or args.gt is not None or args.detections is not None:
            parser.error("--weights needs --data (and no --gt/--detections)")
    elif args.gt is None or args.detections is None:
        parser.error("give --gt and --detections, or --weights and --data")
    elif args.precision != "fp32":
        parser.error(f"--precision {args.precision} goes with --weights (--gt/--detections run no model)")
    return args


def _evaluate_weights(args: argparse.Namespace) -> dict[str, Any]:
    """Detect on a split of ``--data`` with ``--weights`` and print the same tables as the trainer's validation."""
    loaded = load_inference_model(args.weights, args.cfg, args.model, args.num_classes, args.onnx_threads)
    settings = DatasetEvaluationSettings(
        split=args.split, image_size=args.img_size, conf_threshold=args.conf, iou_threshold=args.iou,
        max_detections=args.max_det, batch_size=args.batch_size, device=args.device, precision=args.precision,
        num_sample_images=16 if args.plots else 0,
    )  # fmt: skip
    evaluation = evaluate_on_dataset(loaded, read_data_source(args.data), settings)
    report = evaluation.result.coco
    print(
        f"{loaded.source} on {args.data} {args.split}: {evaluation.num_images} images, {report.num_detections} boxes "
        f"({evaluation.inference})"
    )
    print(report.format_table(per_class=True))
    print()
    print(format_voc_tables([evaluation.voc]))
    output: dict[str, Any] = {"weights": str(args.weights), "data": str(args.data), "split": args.split}
    output.update(precision=args.precision, backend=loaded.backend)
    output.update(coco=report.to_dict(), voc=evaluation.voc.to_dict(), mAP50=evaluation.result.map50)
    if args.plots:
        plot_pr_curves(report, args.plots / "pr_curves.png")
        grid = save_detection_grid(
            evaluation.result.sample_images, args.plots / "detections.png", evaluation.class_names,
            evaluation.normalization,
        )  # fmt: skip
        print(f"\nprecision-recall curves: {args.plots / 'pr_curves.png'}; detections vs truth (white): {grid}")
        output["plots"] = [str(args.plots / "pr_curves.png"), str(grid)]
    return output


def _evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Run what ``args`` asks for, print the tables, and return the numbers for ``--json-out``."""
    ground_truth = load_ground_truth(args.gt)
    detections = load_detections(args.detections, ground_truth, str(args.gt))
    report = evaluate_coco(ground_truth, detections)
    print(f"COCO box evaluation: {report.num_images} images, {report.num_detections} detections")
    print(report.format_table(per_class=args.per_class))
    output: dict[str, Any] = {"ground_truth": str(args.gt), "detections": str(args.detections)}
    output["coco"] = report.to_dict()

    voc_reports = [
        evaluate_voc(ground_truth, detections, use_07_metric=use_07)
        for use_07, wanted in ((False, args.voc), (True, args.voc07))
        if wanted
    ]
    if voc_reports:
        print()
        print(format_voc_tables(voc_reports))
        for voc_report in voc_reports:
            output["voc07" if voc_report.use_07_metric else "voc"] = voc_report.to_dict()

    if args.sweep:
        use_07 = args.voc07 and not args.voc
        rows = sweep_thresholds(ground_truth, detections, args.sweep_thresholds, use_07_metric=use_07)
        print()
        print(format_markdown_table(rows, use_07_metric=use_07))
        output["sweep"] = [row.to_dict() for row in rows]

    if args.plots:
        path = args.plots / "pr_curves.png"
        plot_pr_curves(report, path)
        print(f"\nprecision-recall curves: {path}")
        output["plots"] = [str(path)]
    return output


@command
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(verbose=args.verbose, quiet=not args.verbose)
    output = _evaluate_weights(args) if args.weights is not None else _evaluate(args)
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(output, indent=2) + "\n", encoding="utf-8")
        print(f"report: {args.json_out}")
    return 0
