"""``python -m yolov3.anchors``: anchor boxes for a dataset by k-means on box shapes (YOLOv2's method).

Box shapes (width, height) are taken as each image is letterboxed into ``--img-size``, and clustered with
the distance ``1 - IoU`` of boxes aligned at a corner, so large and small boxes weigh alike. Prints the
anchors sorted by area and the mean best IoU of the boxes with the current anchors (Darknet's COCO ones
by default) and with the new ones; writes an ``anchors_px:`` YAML snippet, a Darknet ``anchors=`` line and
a plot of the box shapes with the centroids to ``--out``::

    python -m yolov3.anchors --data data/shapes.yaml -n 9 --img-size 416 --out runs/anchors
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import numpy as np
import torch
import yaml
from matplotlib.figure import Figure
from tqdm import tqdm

from yolov3.config_loading import ConfigError, load_yaml
from yolov3.data.dataset_config import build_dataset, load_dataset_config
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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m yolov3.anchors", description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="dataset YAML")
    parser.add_argument("-n", "--num-anchors", type=int, default=9)
    parser.add_argument("--img-size", type=int, default=416, help="network input size the anchors are for")
    parser.add_argument("--split", choices=("train", "val"), default="train")
    parser.add_argument("--anchors", help="current anchors: 'w,h, w,h, ...' or a YAML with anchors_px")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--restarts", type=int, default=5)
    parser.add_argument("--max-boxes", type=int, default=500000, help="cluster a random subset of this size")
    parser.add_argument("--out", type=Path, default=Path("anchors"), help="output folder")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        current = read_current_anchors(args.anchors)
        dataset = build_dataset(load_dataset_config(args.data), args.split)
        boxes_wh = dataset_box_shapes(dataset, args.img_size)
        boxes_wh = boxes_wh[(boxes_wh > 0).all(axis=1)]
        if len(boxes_wh) > args.max_boxes:
            boxes_wh = boxes_wh[np.random.default_rng(args.seed).choice(len(boxes_wh), args.max_boxes, replace=False)]
        anchors = kmeans_anchors(boxes_wh, args.num_anchors, args.seed, args.restarts)
    except (ConfigError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    snippet, darknet = format_outputs(anchors)
    written = np.array(yaml.safe_load(snippet)["anchors_px"], dtype=np.float64)
    before, after = mean_best_iou(boxes_wh, current), mean_best_iou(boxes_wh, written)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "anchors.yaml").write_text(
        f"# k-means anchors for {args.data} at {args.img_size} px: mean best IoU {after:.4f} "
        f"(current anchors {before:.4f})\n{snippet}"
    )
    (args.out / "anchors.cfg").write_text(darknet + "\n")
    title = f"{len(boxes_wh)} boxes at {args.img_size} px: mean best IoU {before:.3f} -> {after:.3f}"
    plot_anchors(boxes_wh, written, current, args.out / "anchors.png", title)
    print(f"{len(boxes_wh)} boxes from {len(dataset)} images, letterboxed into {args.img_size}x{args.img_size}")
    print("anchors (w, h), smallest first: " + "  ".join(f"{w:g}x{h:g}" for w, h in written))
    print(f"mean best IoU: current anchors {before:.4f} -> k-means anchors {after:.4f}")
    print(snippet.rstrip())
    print(darknet)
    print(f"wrote {args.out / 'anchors.yaml'}, {args.out / 'anchors.cfg'}, {args.out / 'anchors.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
