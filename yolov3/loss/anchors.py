"""Anchor boxes for a dataset by k-means on box shapes (YOLOv2's method): what ``python -m yolov3.anchors`` runs.

Box shapes (width, height) are taken as each image is letterboxed into the network input, and clustered with
the distance ``1 - IoU`` of boxes aligned at a corner (the shape IoU of the loss's target assignment,
:func:`~yolov3.loss.targets.anchor_shape_iou`), so large and small boxes weigh alike.
:func:`anchors_for_dataset` gives the anchors sorted by area with the mean best IoU of the boxes with the
current anchors (Darknet's COCO ones by default) and with the new ones; :func:`write_anchor_files` writes an
``anchors_px:`` YAML snippet, a Darknet ``anchors=`` line and a plot of the box shapes with the centroids.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from matplotlib.figure import Figure
from tqdm import tqdm

from yolov3.config_loading import ConfigError, load_yaml
from yolov3.data.detection_dataset import DetectionDataset
from yolov3.data.letterbox import compute_letterbox
from yolov3.loss.targets import anchor_shape_iou
from yolov3.models.yolo_head import COCO_ANCHORS_PX

LOGGER = logging.getLogger(__name__)


def _shape_iou(boxes_wh: np.ndarray, anchors_wh: np.ndarray) -> np.ndarray:
    """(N, K) float64 shape IoU of (N, 2) boxes with (K, 2) anchors, by the loss's :func:`anchor_shape_iou`."""
    boxes = torch.from_numpy(np.asarray(boxes_wh, dtype=np.float64))  # (N, 2)
    anchors = torch.from_numpy(np.asarray(anchors_wh, dtype=np.float64))  # (K, 2)
    return anchor_shape_iou(boxes, anchors).numpy()


def mean_best_iou(boxes_wh: np.ndarray, anchors_wh: np.ndarray) -> float:
    """Mean over boxes of the IoU with their best-fitting anchor (shapes only)."""
    if len(boxes_wh) == 0:
        raise ValueError("no box shapes to compare with the anchors")
    return float(_shape_iou(boxes_wh, anchors_wh).max(axis=1).mean())


def _kmeans_plus_plus(boxes_wh: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding with the 1 - IoU distance: each new centre drawn in proportion to distance squared."""
    centres = [boxes_wh[rng.integers(len(boxes_wh))]]
    closest = 1 - _shape_iou(boxes_wh, np.array(centres))[:, 0]  # (N,) distance to the nearest centre
    for _ in range(1, k):
        weights = closest**2
        total = weights.sum()
        index = rng.choice(len(boxes_wh), p=weights / total) if total > 0 else rng.integers(len(boxes_wh))
        centres.append(boxes_wh[index])
        closest = np.minimum(closest, 1 - _shape_iou(boxes_wh, boxes_wh[index : index + 1])[:, 0])
    return np.array(centres, dtype=np.float64)


def _kmeans_once(boxes_wh: np.ndarray, centres: np.ndarray, max_iterations: int) -> tuple[np.ndarray, float]:
    assignments = None
    for _ in range(max_iterations):
        similarity = _shape_iou(boxes_wh, centres)  # (N, K)
        new_assignments = similarity.argmax(axis=1)
        if assignments is not None and np.array_equal(new_assignments, assignments):
            break
        assignments = new_assignments
        for cluster in range(len(centres)):
            members = boxes_wh[assignments == cluster]
            if len(members):
                centres[cluster] = members.mean(axis=0)
            else:  # an empty cluster takes the box that fits the current centres worst
                centres[cluster] = boxes_wh[similarity.max(axis=1).argmin()]
    return centres, mean_best_iou(boxes_wh, centres)


def kmeans_anchors(
    boxes_wh: np.ndarray,
    k: int,
    seed: int = 0,
    restarts: int = 5,
    init: str = "kmeans++",
    max_iterations: int = 1000,
) -> np.ndarray:
    """(k, 2) anchor shapes sorted by area: k-means with distance 1 - IoU, the best of ``restarts`` runs.

    Each run starts from k-means++ (or ``init="random"``: k distinct boxes) seeded from ``seed`` and
    iterates until the assignments stop changing; centroids are the mean shape of their boxes.
    """
    boxes_wh = np.asarray(boxes_wh, dtype=np.float64).reshape(-1, 2)  # (N, 2) width, height
    boxes_wh = boxes_wh[(boxes_wh > 0).all(axis=1)]
    if len(boxes_wh) < k:
        raise ValueError(f"need at least {k} boxes with positive width and height, got {len(boxes_wh)}")
    if init not in ("kmeans++", "random"):
        raise ValueError(f"init must be 'kmeans++' or 'random', got {init!r}")
    rng = np.random.default_rng(seed)
    best, best_iou = None, -1.0
    for _ in range(max(1, restarts)):
        if init == "kmeans++":
            centres = _kmeans_plus_plus(boxes_wh, k, rng)
        else:
            centres = boxes_wh[rng.choice(len(boxes_wh), size=k, replace=False)].copy()
        centres, score = _kmeans_once(boxes_wh, centres, max_iterations)
        if score > best_iou:
            best, best_iou = centres, score
    if best is None:  # every restart scored NaN
        raise ValueError("k-means found no anchors with a finite IoU; check the box sizes for NaN or inf")
    return best[np.argsort(best.prod(axis=1))]


def dataset_box_shapes(dataset: DetectionDataset, img_size: int, progress: bool = True) -> np.ndarray:
    """(N, 2) width, height of every box as its image is letterboxed into ``img_size`` x ``img_size``."""
    shapes = []
    for index in tqdm(range(len(dataset)), desc="box shapes", disable=not progress):
        boxes, _, size = dataset.boxes_and_labels(index)
        if len(boxes):
            placement = compute_letterbox(size, (img_size, img_size))
            widths = (boxes[:, 2] - boxes[:, 0]) * placement.scale_x
            heights = (boxes[:, 3] - boxes[:, 1]) * placement.scale_y
            shapes.append(np.stack([widths, heights], axis=1))  # (M, 2)
    return np.concatenate(shapes) if shapes else np.zeros((0, 2))


def read_current_anchors(value: str | None) -> np.ndarray:
    """Anchors from a ``w,h, w,h, ...`` string or a YAML file with an ``anchors_px`` key (at any depth)."""
    if value is None:
        return np.array(COCO_ANCHORS_PX, dtype=np.float64)
    if Path(value).is_file():
        found = _find_key(load_yaml(value), "anchors_px")
        if found is None:
            raise ConfigError(f"{value}: no anchors_px key")
        return np.asarray(found, dtype=np.float64).reshape(-1, 2)  # (K, 2) width, height
    try:
        numbers = [float(part) for part in value.replace(",", " ").split()]
    except ValueError as error:
        raise ConfigError(f"--anchors {value!r}: expected 'w,h, w,h, ...' or a YAML file") from error
    if not numbers or len(numbers) % 2:
        raise ConfigError(f"--anchors {value!r}: expected an even number of values")
    return np.array(numbers, dtype=np.float64).reshape(-1, 2)  # (K, 2) width, height


def _find_key(node: object, key: str) -> object | None:
    if isinstance(node, dict):
        if key in node:
            return node[key]
        for child in node.values():
            found = _find_key(child, key)
            if found is not None:
                return found
    return None


def format_outputs(anchors: np.ndarray) -> tuple[str, str]:
    """The YAML snippet (``anchors_px: [[w, h], ...]``) and the Darknet ``anchors=`` line."""
    pairs = [[max(1, round(width)), max(1, round(height))] for width, height in anchors]  # Darknet's integers
    snippet = yaml.safe_dump({"anchors_px": pairs}, default_flow_style=None, sort_keys=False)
    darknet = "anchors = " + ",  ".join(f"{width},{height}" for width, height in pairs)
    return snippet, darknet


def plot_anchors(
    boxes_wh: np.ndarray, anchors: np.ndarray, current: np.ndarray, path: str | os.PathLike, title: str
) -> None:
    """Save a scatter plot of box shapes (w vs h) with the new and current anchors."""
    rng = np.random.default_rng(0)
    shown = boxes_wh if len(boxes_wh) <= 20000 else boxes_wh[rng.choice(len(boxes_wh), 20000, replace=False)]
    figure = Figure(figsize=(6, 6))  # no pyplot: no global figure state, Agg canvas by default
    axes = figure.subplots()
    axes.scatter(shown[:, 0], shown[:, 1], s=3, alpha=0.3, label=f"boxes ({len(boxes_wh)})")
    axes.scatter(current[:, 0], current[:, 1], marker="s", s=40, facecolors="none", edgecolors="gray", label="current")
    axes.scatter(anchors[:, 0], anchors[:, 1], marker="x", s=80, color="red", label="k-means anchors")
    axes.set(xlabel="width (px)", ylabel="height (px)", title=title)
    axes.legend(loc="upper left")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


@dataclass(frozen=True)
class AnchorResult:
    """New anchors for a dataset, and how well they and the current ones fit its boxes."""

    boxes_wh: np.ndarray  # (N, 2) the box shapes clustered (a random subset when there were more than max_boxes)
    anchors: np.ndarray  # (K, 2) width, height as written: Darknet's integers, smallest area first
    current: np.ndarray  # (K', 2) the current anchors
    mean_iou_current: float
    mean_iou_new: float
    yaml_snippet: str  # anchors_px: [[w, h], ...]
    darknet_line: str  # anchors = w,h,  w,h, ...


def anchors_for_dataset(
    dataset: DetectionDataset,
    num_anchors: int,
    img_size: int,
    current: np.ndarray,
    seed: int = 0,
    restarts: int = 5,
    max_boxes: int = 500000,
    progress: bool = True,
) -> AnchorResult:
    """k-means anchors for the boxes of ``dataset`` letterboxed into ``img_size``, at most ``max_boxes`` of them
    (a random subset drawn from ``seed``), compared with the ``current`` (K', 2) anchors."""
    boxes_wh = dataset_box_shapes(dataset, img_size, progress)
    boxes_wh = boxes_wh[(boxes_wh > 0).all(axis=1)]
    if len(boxes_wh) > max_boxes:
        boxes_wh = boxes_wh[np.random.default_rng(seed).choice(len(boxes_wh), max_boxes, replace=False)]
    anchors = kmeans_anchors(boxes_wh, num_anchors, seed, restarts)
    snippet, darknet = format_outputs(anchors)
    written = np.array(yaml.safe_load(snippet)["anchors_px"], dtype=np.float64)  # (K, 2) the rounded anchors
    return AnchorResult(
        boxes_wh, written, current, mean_best_iou(boxes_wh, current), mean_best_iou(boxes_wh, written), snippet, darknet
    )


def write_anchor_files(result: AnchorResult, out: Path, data_name: str, img_size: int) -> list[Path]:
    """``anchors.yaml`` (with a comment saying how it was made), ``anchors.cfg`` and ``anchors.png`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "anchors.yaml").write_text(
        f"# k-means anchors for {data_name} at {img_size} px: mean best IoU {result.mean_iou_new:.4f} "
        f"(current anchors {result.mean_iou_current:.4f})\n{result.yaml_snippet}"
    )
    (out / "anchors.cfg").write_text(result.darknet_line + "\n")
    title = (
        f"{len(result.boxes_wh)} boxes at {img_size} px: mean best IoU {result.mean_iou_current:.3f} -> "
        f"{result.mean_iou_new:.3f}"
    )
    plot_anchors(result.boxes_wh, result.anchors, result.current, out / "anchors.png", title)
    return [out / "anchors.yaml", out / "anchors.cfg", out / "anchors.png"]
