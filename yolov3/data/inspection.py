"""Looking at a dataset as the network will see it, and at its statistics (``python -m yolov3.data.show``).

:func:`show` writes into ``out``:

- ``batch.png``: a grid of one augmented training batch (``augmented=False``: letterbox only) with its boxes
  and class names, exactly as the training loader produces it (mosaic, multi-scale off, ``image_size``);
- ``statistics.png``: boxes per class as a log-scale bar plot (rare classes weigh as much as common ones in
  the unweighted mAP, so an unbalanced dataset shows here) and the histogram of box widths and heights in
  pixels of the original images;
- ``statistics.md``: the same numbers as a table (:func:`format_statistics`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import matplotlib
import numpy as np
import torch
from matplotlib import ticker
from matplotlib.figure import Figure
from torch.utils.data import Dataset
from torchvision.utils import draw_bounding_boxes, make_grid
from tqdm import tqdm

from yolov3.data.collate import Batch
from yolov3.data.dataset_config import Split, build_dataset, load_dataset_config
from yolov3.data.loader import build_train_loader, build_val_loader
from yolov3.data.multiscale import MultiScaleConfig
from yolov3.data.sample import dataset_class_names, sized
from yolov3.data.transforms import AugmentConfig, Normalization, tensor_to_image

logger = logging.getLogger(__name__)


@dataclass
class DatasetStatistics:
    """Counts and box sizes of a dataset (boxes in pixels of the original images)."""

    class_names: tuple[str, ...]
    num_images: int
    images_without_boxes: int
    boxes_per_class: np.ndarray  # (C,) int64
    images_per_class: np.ndarray  # (C,) int64: images holding at least one box of the class
    box_widths: np.ndarray  # (N,) float32 pixels
    box_heights: np.ndarray  # (N,) float32 pixels

    @property
    def num_boxes(self) -> int:
        return int(self.boxes_per_class.sum())


def _boxes_and_labels(dataset: Dataset, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Boxes and labels of image ``index``, without decoding pixels when the dataset can say them directly."""
    if hasattr(dataset, "boxes_and_labels"):
        boxes, labels, _ = dataset.boxes_and_labels(index)
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)  # (M, 4)
        return boxes, np.asarray(labels, dtype=np.int64).reshape(-1)  # (M,)
    sample = dataset[index]
    return sample.boxes_xyxy, sample.labels


def compute_statistics(dataset: Dataset, limit: int | None = None, progress: bool = True) -> DatasetStatistics:
    """Count boxes per class, images per class, and box sizes over the first ``limit`` images (all by default)."""
    class_names = tuple(dataset_class_names(dataset))
    count = len(sized(dataset)) if limit is None else min(limit, len(sized(dataset)))
    boxes_per_class = np.zeros(len(class_names), dtype=np.int64)
    images_per_class = np.zeros(len(class_names), dtype=np.int64)
    widths, heights, empty = [], [], 0
    for index in tqdm(range(count), desc="statistics", unit="image", disable=not progress):
        boxes, labels = _boxes_and_labels(dataset, index)
        empty += int(len(labels) == 0)
        boxes_per_class += np.bincount(labels, minlength=len(class_names))
        images_per_class[np.unique(labels)] += 1
        widths.append(boxes[:, 2] - boxes[:, 0])
        heights.append(boxes[:, 3] - boxes[:, 1])
    return DatasetStatistics(
        class_names=class_names,
        num_images=count,
        images_without_boxes=empty,
        boxes_per_class=boxes_per_class,
        images_per_class=images_per_class,
        box_widths=np.concatenate(widths) if widths else np.zeros(0, np.float32),
        box_heights=np.concatenate(heights) if heights else np.zeros(0, np.float32),
    )


def format_statistics(statistics: DatasetStatistics) -> str:
    """Markdown: totals, then one row per class (boxes, share, images), then box-size percentiles."""
    total = max(statistics.num_boxes, 1)
    lines = [
        f"images: {statistics.num_images} ({statistics.images_without_boxes} without boxes), "
        f"boxes: {statistics.num_boxes}, classes: {len(statistics.class_names)}",
        "",
        "| class | boxes | share | images |",
        "|---|---:|---:|---:|",
    ]
    for name, boxes, images in zip(
        statistics.class_names, statistics.boxes_per_class, statistics.images_per_class, strict=True
    ):
        lines.append(f"| {name} | {boxes} | {100 * boxes / total:.1f}% | {images} |")
    if statistics.num_boxes:
        lines += ["", "| box size (pixels) | min | 5% | median | 95% | max |", "|---|---:|---:|---:|---:|---:|"]
        for label, values in (("width", statistics.box_widths), ("height", statistics.box_heights)):
            quantiles = np.quantile(values, [0.0, 0.05, 0.5, 0.95, 1.0])
            lines.append(f"| {label} | " + " | ".join(f"{value:.1f}" for value in quantiles) + " |")
    return "\n".join(lines)


def plot_statistics(statistics: DatasetStatistics, path: str | Path) -> Path:
    """Save the boxes-per-class bar plot (log scale) and the box width / height histogram as one PNG."""
    figure = Figure(figsize=(max(8.0, 0.35 * len(statistics.class_names) + 6.0), 4.5), layout="constrained")
    class_axes, size_axes = figure.subplots(1, 2, width_ratios=[max(1.0, len(statistics.class_names) / 10), 1])
    positions = np.arange(len(statistics.class_names))
    class_axes.bar(positions, np.maximum(statistics.boxes_per_class, 0.8), color="tab:blue")
    class_axes.set_yscale("log")
    class_axes.set_ylim(0.8, max(10.0, 2.0 * float(statistics.boxes_per_class.max(initial=1))))
    class_axes.set_xticks(positions, statistics.class_names, rotation=90 if len(positions) > 8 else 0, fontsize=8)
    class_axes.set_ylabel("boxes (log scale)")
    class_axes.set_title(f"boxes per class ({statistics.num_boxes} in {statistics.num_images} images)")
    if statistics.num_boxes:
        sizes = np.concatenate([statistics.box_widths, statistics.box_heights])
        low, high = max(float(sizes.min()), 1.0), max(float(sizes.max()), 2.0)
        bins = np.geomspace(low, max(high, low * 1.01), 40)
        size_axes.hist(statistics.box_widths, bins=bins, histtype="step", linewidth=1.5, label="width")
        size_axes.hist(statistics.box_heights, bins=bins, histtype="step", linewidth=1.5, label="height")
        size_axes.set_xscale("log")
        powers_of_two = [2**power for power in range(14) if low / 1.5 <= 2**power <= high * 1.5]
        size_axes.set_xticks(powers_of_two, [str(value) for value in powers_of_two])
        size_axes.xaxis.set_minor_formatter(ticker.NullFormatter())
        size_axes.legend()
    size_axes.set_xlabel("pixels (original image, log scale)")
    size_axes.set_ylabel("boxes")
    size_axes.set_title("box sizes")
    path = Path(path)
    figure.savefig(path, dpi=100)
    return path


def class_colors(count: int) -> list[tuple[int, int, int]]:
    """One distinct RGB colour per class (matplotlib's tab20, repeated)."""
    colormap = matplotlib.colormaps["tab20"]  # 20 colours: colormap(i) is the i-th, as RGBA floats in 0..1
    colors = []
    for index in range(count):
        red, green, blue, _ = colormap(index % colormap.N)
        colors.append((int(255 * red), int(255 * green), int(255 * blue)))
    return colors


def draw_batch(
    batch: Batch, class_names: Sequence[str], normalization: Normalization, columns: int | None = None
) -> np.ndarray:
    """The batch's images with their target boxes and class names, as one (H, W, 3) uint8 RGB grid."""
    _, _, height, width = batch.images.shape
    scale = torch.tensor([width, height, width, height], dtype=torch.float32)
    colors = class_colors(len(class_names))
    tiles = []
    for index in range(len(batch)):
        image = torch.from_numpy(tensor_to_image(batch.images[index], normalization)).permute(2, 0, 1)  # -> (3,H,W)
        targets = batch.targets[batch.targets[:, 0] == index]
        centers, sizes = targets[:, 2:4], targets[:, 4:6]
        boxes = torch.cat([centers - sizes / 2, centers + sizes / 2], dim=1) * scale  # (M, 4) xyxy pixels
        classes = targets[:, 1].long().tolist()
        if len(classes):
            image = draw_bounding_boxes(
                image,
                boxes,
                labels=[class_names[c] if 0 <= c < len(class_names) else str(c) for c in classes],
                colors=[colors[c % len(colors)] for c in classes],
                width=2,
            )
        tiles.append(image)
    columns = columns or int(np.ceil(np.sqrt(len(tiles))))
    grid = make_grid(tiles, nrow=columns, padding=4, pad_value=255)  # (3, H', W')
    return grid.permute(1, 2, 0).numpy()  # (3, H', W') -> (H', W', 3)


def save_image(image_rgb: np.ndarray, path: str | Path) -> Path:
    """Write an (H, W, 3) uint8 RGB image (PNG by suffix) and return its path."""
    path = Path(path)
    if not cv2.imwrite(str(path), cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"{path}: cannot write the image")
    return path


def load_dataset(data_path: str | Path, split: Split) -> Dataset:
    """The ``split`` (train or val) of the dataset described by the YAML ``data_path``."""
    return build_dataset(load_dataset_config(data_path), split)


def show(
    dataset: Dataset,
    augment: AugmentConfig,
    out: str | Path,
    batch_size: int = 16,
    image_size: int = 416,
    augmented: bool = True,
    seed: int = 0,
    stats_limit: int | None = None,
    progress: bool = True,
) -> tuple[DatasetStatistics, dict[str, Path]]:
    """Write ``batch.png``, ``statistics.png`` and ``statistics.md`` into ``out``; return the statistics and paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    batch_size = min(batch_size, len(sized(dataset)))
    if augmented:
        fixed = MultiScaleConfig(enabled=False)
        loader = build_train_loader(dataset, augment, batch_size, 0, fixed, seed, image_size, drop_last=False)
    else:
        loader = build_val_loader(dataset, augment, batch_size, 0, image_size)
    batch = next(iter(loader))
    class_names = tuple(dataset_class_names(dataset))
    paths = {"batch": save_image(draw_batch(batch, class_names, augment.normalization), out / "batch.png")}
    statistics = compute_statistics(dataset, stats_limit, progress)
    paths["statistics"] = plot_statistics(statistics, out / "statistics.png")
    paths["table"] = out / "statistics.md"
    paths["table"].write_text(format_statistics(statistics) + "\n")
    return statistics, paths
