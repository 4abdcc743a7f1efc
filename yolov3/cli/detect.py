"""``python -m yolov3.detect``: run a detector on images; write drawn images, YOLO labels and COCO results.

Examples::

    python -m yolov3.detect --cfg yolov3-tiny.cfg --weights yolov3-tiny.weights --names coco.names --source img/
    python -m yolov3.detect --model yolov3 --weights yolov3.weights --source "data/*.jpg" --coco91 --conf 0.001
    python -m yolov3.detect --weights runs/train/best.pt --source img/    # a checkpoint names model and classes
    python -m yolov3.detect --weights best.pt --source a.jpg b.jpg clip.mp4 --output darknet
    python -m yolov3.detect --weights model-int8.onnx --source img/   # ONNX Runtime; model.yolov3c works too

``--source`` takes several image files, folders, globs and video files (.mp4, .avi, .mov, .mkv). Darknet
``.weights`` get Darknet's own preprocessing (``letterbox_image``) and output (every class over ``--conf`` per
box, NMS per class) by default, so the detections are ``darknet detector test``'s; ``--letterbox ours`` /
``--output standard`` switch back, ``--resize stretch`` stretches (AlexeyAB's default), and checkpoints keep
the preprocessing they were trained with.

Writes into ``--out``: every image with its boxes drawn (same file name), ``labels/<stem>.txt`` with one
``class cx cy w h`` line per detection, normalized to 0..1 by the image size (``--save-conf`` appends the
score): pseudo-labels for further training; and ``detections.json`` in COCO's results format (images only).
A video is written back annotated (same name) with ``labels/<stem>_<frame>.txt`` per frame (frames from 0).
Unreadable images are skipped with a warning and counted in the summary line.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

import torch

from yolov3.cli.runner import command, configure_logging
from yolov3.data.image_io import read_image_rgb
from yolov3.inference.detect_files import COCO80_TO_COCO91, DetectError, read_class_names, run_detection
from yolov3.inference.detection_config import OUTPUT_MODES, DetectionConfig, OutputMode
from yolov3.inference.model_loading import load_inference_model
from yolov3.inference.precision import PRECISIONS
from yolov3.inference.predictor import Predictor
from yolov3.inference.preprocess import RESAMPLINGS, Preprocessing
from yolov3.inference.sources import resolve_sources
from yolov3.inference.stb_decoder import StbDecoder
from yolov3.models import list_models

logger = logging.getLogger(__name__)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m yolov3.detect", description=__doc__.splitlines()[0])
    model_group = parser.add_mutually_exclusive_group()
    model_group.add_argument("--cfg", help="the Darknet .cfg of Darknet --weights")
    model_group.add_argument("--model", help=f"the registered model of Darknet --weights: {', '.join(list_models())}")
    parser.add_argument(
        "--weights",
        required=True,
        help="a checkpoint (.pt: names its model, classes and input size), a compressed .yolov3c, an ONNX graph "
        "from python -m yolov3.export (.onnx: fp32, fp16 or int8, run by ONNX Runtime) or Darknet .weights",
    )
    parser.add_argument("--onnx-threads", type=int, help="ONNX Runtime threads of an .onnx --weights (default: its)")
    parser.add_argument("--num-classes", type=int, help="classes of --model (default: the model's own)")
    parser.add_argument(
        "--source", required=True, nargs="+", help="images, directories, glob patterns and videos (.mp4 .avi .mov .mkv)"
    )
    parser.add_argument("--out", default="runs/detect", help="output directory (default: runs/detect)")
    parser.add_argument("--conf", type=float, default=0.25, help="score threshold on objectness * class probability")
    parser.add_argument("--iou", type=float, default=0.45, help="NMS IoU threshold")
    parser.add_argument("--img-size", type=int, nargs="+", help="input size: one number, or height width")
    parser.add_argument("--names", help="class names file, one per line (default: the checkpoint's)")
    resize_group = parser.add_mutually_exclusive_group()
    resize_group.add_argument(
        "--letterbox",
        choices=("ours", "darknet"),
        help="letterbox with OpenCV's resize (ours) or Darknet's own letterbox_image (default: the model's)",
    )
    resize_group.add_argument(
        "--resize", choices=("letterbox", "stretch"), help="keep the aspect ratio or stretch (default: the model's)"
    )
    resize_group.add_argument("--no-letterbox", action="store_true", help="stretch images: --resize stretch")
    parser.add_argument(
        "--resampling", choices=RESAMPLINGS, help="resize kernel: OpenCV's or Darknet's (default: the model's)"
    )
    parser.add_argument(
        "--output",
        choices=OUTPUT_MODES,
        help="standard (best class, --max-det) or darknet (every class over --conf, NMS per class); "
        "default: darknet for Darknet .weights, standard for checkpoints",
    )
    parser.add_argument(
        "--stb-library",
        help="decode images with stb_image from this shared library (e.g. Darknet's libdarknet.so), as Darknet does",
    )
    parser.add_argument("--multi-label", action="store_true", help="one detection per class that passes --conf")
    parser.add_argument("--agnostic-nms", action="store_true", help="NMS across classes")
    parser.add_argument("--max-det", type=int, default=300, help="maximum detections per image")
    parser.add_argument("--save-conf", action="store_true", help="append the score to each label line")
    parser.add_argument("--coco91", action="store_true", help="COCO's original 91-id category ids in the JSON")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward pass")
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="fp32: exact (default; Darknet's own detections for .weights); bf16 (fast on CPUs with AVX512-BF16 "
        "or AMX, and recent GPUs) or fp16 (CUDA): autocast, BN fused, channels_last",
    )
    args = parser.parse_args(argv)
    if args.img_size is not None and len(args.img_size) not in (1, 2):
        parser.error(f"--img-size takes one number or height width, got {len(args.img_size)} numbers")
    if args.num_classes is not None and args.cfg:
        parser.error("--num-classes goes with --model; a cfg sets its own classes")
    if args.letterbox and args.resampling:
        parser.error("--letterbox ours|darknet sets the resampling; use --resize letterbox --resampling instead")
    return args


def choose_preprocessing(args: argparse.Namespace, default: Preprocessing) -> Preprocessing:
    """The model's preprocessing with the arguments' geometry and resampling put over it."""
    letterbox, resampling = default.letterbox, default.resampling
    if args.letterbox:
        letterbox, resampling = True, {"ours": "opencv", "darknet": "darknet"}[args.letterbox]
    if args.resize:
        letterbox = args.resize == "letterbox"
    if args.no_letterbox:
        letterbox = False
    if args.resampling:
        resampling = args.resampling
    return Preprocessing(letterbox=letterbox, fill=default.fill, resampling=resampling)


def build_predictor(args: argparse.Namespace) -> Predictor:
    """The model, its weights and the inference options that the arguments describe."""
    loaded = load_inference_model(args.weights, args.cfg, args.model, args.num_classes, args.onnx_threads)
    loaded.check_precision(args.precision)  # an ONNX graph has its own
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise DetectError(f"--device {device}: CUDA is not available on this machine")
    size = args.img_size
    input_size = loaded.input_size if size is None else loaded.check_input_size((size[0], size[-1]))
    darknet_weights = loaded.darknet_weights  # .weights, or an ONNX graph exported from them
    preprocessing = choose_preprocessing(args, loaded.preprocessing)  # Darknet's letterbox_image for .weights
    output: OutputMode = args.output or ("darknet" if darknet_weights else "standard")
    logger.info("preprocessing: %s (%s resampling); output: %s", preprocessing.mode, preprocessing.resampling, output)
    detection = DetectionConfig(args.conf, args.iou, args.max_det, args.multi_label, args.agnostic_nms, output)
    predictor = Predictor(
        loaded.model,
        loaded.head_specs,
        input_size,
        preprocessing=preprocessing,
        detection=detection,
        device=device,
        batch_size=args.batch_size,
        class_names=loaded.class_names,
        precision=args.precision,
    )
    if args.names:
        predictor.class_names = read_class_names(args.names, predictor.num_classes)
    if args.coco91 and predictor.num_classes != len(COCO80_TO_COCO91):
        raise DetectError(f"--coco91 needs an 80-class COCO model; this one has {predictor.num_classes} classes")
    return predictor


@command
def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns a process exit code (2 on bad input, 1 when no image could be read)."""
    args = parse_args(argv)
    configure_logging()
    paths = resolve_sources(args.source)
    predictor = build_predictor(args)
    counts = run_detection(
        predictor,
        paths,
        args.out,
        save_conf=args.save_conf,
        category_ids=COCO80_TO_COCO91 if args.coco91 else None,
        read_image=StbDecoder(args.stb_library) if args.stb_library else read_image_rgb,
    )
    print(
        f"{counts.done} images, {counts.detections} detections, {counts.skipped} skipped as unreadable; "
        f"results in {args.out} (labels/, detections.json)"
    )
    return 0 if counts.done else 1
