"""Detecting on image and video files and writing what ``python -m yolov3.detect`` writes.

:func:`run_detection` runs a :class:`~yolov3.inference.predictor.Predictor` over files and writes into ``out``:
every image with its boxes drawn (same file name), ``labels/<stem>.txt`` with one ``class cx cy w h`` line
per detection, normalized to 0..1 by the image size (``save_conf`` appends the score), and
``detections.json`` in COCO's results format (images only). A video is written back annotated (same name)
with ``labels/<stem>_<frame>.txt`` per frame (frames from 0). Unreadable images and videos are skipped with a
warning and counted.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from yolov3.data.image_io import ImageReadError, read_image_rgb
from yolov3.inference.coco_results import coco_detections
from yolov3.inference.draw import draw_detections
from yolov3.inference.predictor import Predictor
from yolov3.inference.sources import VideoWriter, count_frames, is_video, read_video_frames, video_frame_rate

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
    """Bad input to detection: a names file that does not fit the model, a device that is not there."""


@dataclass(frozen=True)
class DetectionCounts:
    """What :func:`run_detection` did: images and video frames done, detections written, files skipped."""

    done: int
    detections: int
    skipped: int


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


def write_labels(path: Path, detections: dict[str, torch.Tensor], image_size: tuple[int, int], save_conf: bool) -> int:
    """Write one YOLO label file; returns its number of detections."""
    lines = yolo_label_lines(detections, image_size, save_conf)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return len(lines)


def detect_video(predictor: Predictor, path: Path, out: Path, name: str, save_conf: bool, bar: tqdm) -> tuple[int, int]:
    """Detect on every frame of a video: write it back annotated as ``out/name`` and a label file per frame;
    returns (frames, detections)."""
    writer = VideoWriter(out / name, video_frame_rate(path))
    frames = detections_count = 0
    stem = Path(name).stem

    def flush(batch: list[np.ndarray]) -> None:
        nonlocal frames, detections_count
        for image, detections in zip(batch, predictor.predict(batch), strict=True):
            writer.write(draw_detections(image, detections, predictor.class_names))
            label_path = out / "labels" / f"{stem}_{frames}.txt"
            detections_count += write_labels(label_path, detections, image.shape[:2], save_conf)
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


def run_detection(
    predictor: Predictor,
    paths: Sequence[Path],
    out: str | Path,
    *,
    save_conf: bool = False,
    category_ids: Sequence[int] | None = None,
    read_image: Callable[[Path], np.ndarray] = read_image_rgb,
) -> DetectionCounts:
    """Detect on every image and video frame of ``paths`` and write the outputs into ``out``.

    ``category_ids`` maps labels to the COCO results' ``category_id`` (e.g. :data:`COCO80_TO_COCO91`);
    ``read_image`` decodes an image file to RGB (e.g. a :class:`~yolov3.inference.stb_decoder.StbDecoder`).
    """
    out = Path(out)
    labels_dir = out / "labels"
    labels_dir.mkdir(parents=True, exist_ok=True)
    names = output_names(paths)
    images = [index for index, path in enumerate(paths) if not is_video(path)]
    videos = [index for index, path in enumerate(paths) if is_video(path)]
    image_ids = dict(zip(images, assign_image_ids([paths[index] for index in images]), strict=True))
    total = len(images) + sum(count_frames(paths[index]) or 0 for index in videos)
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
                detections_count += write_labels(label_path, detections, image.shape[:2], save_conf)
                results.extend(coco_detections(image_ids[index], detections, category_ids=category_ids, rounded=True))
                done += 1
            bar.update(len(chunk))
        for index in videos:
            try:
                frames, found = detect_video(predictor, paths[index], out, names[index], save_conf, bar)
            except OSError as error:
                logger.warning("skipping unreadable video %s", error)
                skipped += 1
                continue
            done, detections_count = done + frames, detections_count + found
    (out / "detections.json").write_text(json.dumps(results), encoding="utf-8")
    return DetectionCounts(done, detections_count, skipped)
