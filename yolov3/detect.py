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
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from yolov3.darknet.cfg import CfgError
from yolov3.darknet.weights_file import WeightsFileError
from yolov3.data.image_io import ImageReadError, read_image_rgb
from yolov3.evaluation.dataset_gt import coco_detections
from yolov3.inference.draw import draw_detections
from yolov3.inference.model_loading import load_inference_model
from yolov3.inference.postprocess import OUTPUT_MODES
from yolov3.inference.precision import PRECISIONS
from yolov3.inference.predictor import Predictor
from yolov3.inference.preprocess import RESAMPLINGS, Preprocessing
from yolov3.inference.sources import (
    VideoWriter,
    count_frames,
    is_video,
    read_video_frames,
    resolve_sources,
    video_frame_rate,
)
from yolov3.inference.stb_decoder import StbDecoder
from yolov3.models import list_models

logger = logging.getLogger(__name__)

# COCO's original category ids (1..90 with gaps) for the 80 contiguous classes of coco.names, in order.
COCO80_TO_COCO91 = (
    *range(1, 12),
    *range(13, 26),
    27,
    28,
    *range(31, 45),
    *range(46, 66),
    67,
    70,
    *range(72, 83),
    *range(84, 91),
)


class DetectError(ValueError):
    """Bad command-line input: a missing source, an empty directory, a names file that does not fit."""


def read_class_names(path: str | Path, num_classes: int) -> list[str]:
    """One class name per line (trailing blank lines ignored); the count must equal the model's classes."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise DetectError(f"{path}: cannot read class names ({error.strerror or error})") from error
    names = [line.strip() for line in lines]
    while names and not names[-1]:
        names.pop()
    if len(names) != num_classes:
        raise DetectError(f"{path}: has {len(names)} class names, but the model has {num_classes} classes")
    return names


def assign_image_ids(paths: Sequence[Path]) -> list[int]:
    """COCO ``image_id`` per image: the integer file stems when every stem is a distinct integer (COCO's own
    file names), otherwise the index in sorted order, so ids never collide."""
    stems = [path.stem for path in paths]
    if all(stem.isdigit() for stem in stems) and len({int(stem) for stem in stems}) == len(stems):
        return [int(stem) for stem in stems]
    return list(range(len(paths)))


def output_names(paths: Sequence[Path]) -> list[str]:
    """A distinct output file name per image: its own name, with ``_<index>`` added when two would collide."""
    names, used = [], set()
    for index, path in enumerate(paths):
        name = path.name if path.name not in used else f"{path.stem}_{index}{path.suffix}"
        used.add(name)
        names.append(name)
    return names


def yolo_label_lines(
    detections: dict[str, torch.Tensor], image_size: tuple[int, int], save_conf: bool = False
) -> list[str]:
    """``class cx cy w h [score]`` lines, coordinates normalized by the (height, width) of the image."""
    height, width = image_size
    lines = []
    boxes = detections["boxes"].tolist()
    for (left, top, right, bottom), label, score in zip(
        boxes, detections["labels"].tolist(), detections["scores"].tolist(), strict=True
    ):
        center_x, center_y = (left + right) / 2 / width, (top + bottom) / 2 / height
        box_width, box_height = (right - left) / width, (bottom - top) / height
        line = f"{label} {center_x:.6f} {center_y:.6f} {box_width:.6f} {box_height:.6f}"
        lines.append(f"{line} {score:.6f}" if save_conf else line)
    return lines


def write_image_rgb(path: Path, image_rgb: np.ndarray) -> None:
    """Write an RGB image; the format follows the suffix. Raises ``OSError`` naming the file on failure."""
    if not cv2.imwrite(str(path), cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"{path}: could not write the image (unsupported suffix or unwritable directory)")


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
    output = args.output or ("darknet" if darknet_weights else "standard")
    logger.info("preprocessing: %s (%s resampling); output: %s", preprocessing.mode, preprocessing.resampling, output)
    predictor = Predictor(
        loaded.model,
        loaded.head_specs,
        input_size,
        preprocessing=preprocessing,
        conf_threshold=args.conf,
        iou_threshold=args.iou,
        max_detections=args.max_det,
        multi_label=args.multi_label,
        class_agnostic=args.agnostic_nms,
        device=device,
        batch_size=args.batch_size,
        class_names=loaded.class_names,
        output=output,
        precision=args.precision,
    )
    if args.names:
        predictor.class_names = read_class_names(args.names, predictor.num_classes)
    if args.coco91 and predictor.num_classes != len(COCO80_TO_COCO91):
        raise DetectError(f"--coco91 needs an 80-class COCO model; this one has {predictor.num_classes} classes")
    return predictor


def write_labels(path: Path, detections: dict[str, torch.Tensor], image_size: tuple[int, int], save_conf: bool) -> int:
    """Write one YOLO label file; returns its number of detections."""
    lines = yolo_label_lines(detections, image_size, save_conf)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return len(lines)


def detect_video(args: argparse.Namespace, predictor: Predictor, path: Path, name: str, bar: tqdm) -> tuple[int, int]:
    """Detect on every frame of a video: write it back annotated and a label file per frame; (frames, detections)."""
    out = Path(args.out)
    writer = VideoWriter(out / name, video_frame_rate(path))
    frames = detections_count = 0
    stem = Path(name).stem

    def flush(batch: list[np.ndarray]) -> None:
        nonlocal frames, detections_count
        for image, detections in zip(batch, predictor.predict(batch), strict=True):
            writer.write(draw_detections(image, detections, predictor.class_names))
            label_path = out / "labels" / f"{stem}_{frames}.txt"
            detections_count += write_labels(label_path, detections, image.shape[:2], args.save_conf)
            frames += 1
        bar.update(len(batch))

    try:
        batch: list[np.ndarray] = []
        for frame in read_video_frames(path):
            batch.append(frame)
            if len(batch) == predictor.batch_size:
                flush(batch)
                batch = []
        if batch:
            flush(batch)
    finally:
        writer.close()
    if frames == 0:
        logger.warning("%s: the video has no readable frame", path)
    return frames, detections_count


def run_detection(args: argparse.Namespace, predictor: Predictor, paths: list[Path]) -> tuple[int, int, int]:
    """Detect on every image and video frame and write the outputs; returns (images and frames done,
    detections, images skipped)."""
    out = Path(args.out)
    labels_dir = out / "labels"
    labels_dir.mkdir(parents=True, exist_ok=True)
    names = output_names(paths)
    read_image = StbDecoder(args.stb_library) if args.stb_library else read_image_rgb
    images = [index for index, path in enumerate(paths) if not is_video(path)]
    videos = [index for index, path in enumerate(paths) if is_video(path)]
    image_ids = dict(zip(images, assign_image_ids([paths[index] for index in images]), strict=True))
    total = len(images) + sum(count_frames(paths[index]) or 0 for index in videos)
    category_ids = COCO80_TO_COCO91 if args.coco91 else None
    results: list[dict] = []
    done = detections_count = skipped = 0
    with logging_redirect_tqdm(), tqdm(total=total, unit="image", desc="detect", disable=None) as bar:
        for start in range(0, len(images), predictor.batch_size):
            chunk = images[start : start + predictor.batch_size]
            batch = []
            for index in chunk:
                try:
                    batch.append((index, read_image(paths[index])))
                except ImageReadError as error:
                    logger.warning("skipping unreadable image %s", error)
                    skipped += 1
            predictions = predictor.predict([image for _, image in batch]) if batch else []
            for (index, image), detections in zip(batch, predictions, strict=True):
                write_image_rgb(out / names[index], draw_detections(image, detections, predictor.class_names))
                label_path = labels_dir / (Path(names[index]).stem + ".txt")
                detections_count += write_labels(label_path, detections, image.shape[:2], args.save_conf)
                results.extend(coco_detections(image_ids[index], detections, category_ids=category_ids, rounded=True))
                done += 1
            bar.update(len(chunk))
        for index in videos:
            try:
                frames, found = detect_video(args, predictor, paths[index], names[index], bar)
            except OSError as error:
                logger.warning("skipping unreadable video %s", error)
                skipped += 1
                continue
            done, detections_count = done + frames, detections_count + found
    (out / "detections.json").write_text(json.dumps(results), encoding="utf-8")
    return done, detections_count, skipped


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns a process exit code (1 on bad input or when no image could be read)."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    try:
        paths = resolve_sources(args.source)
        predictor = build_predictor(args)
        done, detections_count, skipped = run_detection(args, predictor, paths)
    except (DetectError, CfgError, WeightsFileError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyError as error:  # an unknown --model; KeyError's str() would add quotes
        print(f"error: {error.args[0]}", file=sys.stderr)
        return 1
    print(
        f"{done} images, {detections_count} detections, {skipped} skipped as unreadable; "
        f"results in {args.out} (labels/, detections.json)"
    )
    return 0 if done else 1


if __name__ == "__main__":
    raise SystemExit(main())
