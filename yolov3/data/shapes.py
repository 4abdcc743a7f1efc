"""Drawing synthetic detection scenes: filled shapes of several kinds on textured backgrounds.

Classes differ by outline only (colours are random), so a detector must learn shapes. Shapes are drawn
without anti-aliasing, so each object's box is exactly the bounding box of its pixels (``x2``, ``y2``
exclusive). Later shapes may cover earlier ones, but never more than ``max_occlusion`` of their pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import MappingProxyType

import cv2
import numpy as np

# Outlines in unit-box coordinates (x, y in 0..1); "circle" is drawn as an ellipse filling the box.
_UNIT_POLYGONS = MappingProxyType(
    {
        "square": ((0, 0), (1, 0), (1, 1), (0, 1)),
        "triangle": ((0.5, 0), (1, 1), (0, 1)),
        "diamond": ((0.5, 0), (1, 0.5), (0.5, 1), (0, 0.5)),
        "hexagon": ((0.25, 0), (0.75, 0), (1, 0.5), (0.75, 1), (0.25, 1), (0, 0.5)),
        "cross": (
            (1 / 3, 0),
            (2 / 3, 0),
            (2 / 3, 1 / 3),
            (1, 1 / 3),
            (1, 2 / 3),
            (2 / 3, 2 / 3),
            (2 / 3, 1),
            (1 / 3, 1),
            (1 / 3, 2 / 3),
            (0, 2 / 3),
            (0, 1 / 3),
            (1 / 3, 1 / 3),
        ),
    }
)
SHAPE_NAMES = ("circle", "square", "triangle", "diamond", "hexagon", "star", "cross")
MIN_CONTRAST = 150  # sum of absolute RGB differences between a shape and what it is drawn over
DRAW_SHIFT = 4  # cv2 sub-pixel bits for ellipse centres and axes
NOISE_AMPLITUDE = 10  # uniform pixel noise over textured scenes, in 0..255 units


@dataclass(frozen=True)
class SceneOptions:
    """How scenes are drawn; sizes are fractions of the shorter image side (log-uniform)."""

    classes: tuple[str, ...] = ("circle", "square", "triangle")
    min_objects: int = 1
    max_objects: int = 6
    object_size_range: tuple[float, float] = (0.08, 0.45)
    aspect_range: tuple[float, float] = (0.6, 1.6)  # width / height, log-uniform
    max_occlusion: float = 0.4
    background: str = "textured"  # "textured" (gradient, blobs, lines, noise) or "plain" (one colour)

    def __post_init__(self) -> None:
        unknown = [name for name in self.classes if name not in SHAPE_NAMES]
        if unknown or not self.classes or len(set(self.classes)) != len(self.classes):
            raise ValueError(f"classes must be distinct shapes from {', '.join(SHAPE_NAMES)}; got {self.classes}")
        if not 0 <= self.min_objects <= self.max_objects:
            raise ValueError(f"need 0 <= min_objects <= max_objects, got {self.min_objects}, {self.max_objects}")
        low, high = self.object_size_range
        if not 0 < low <= high <= 1:
            raise ValueError(f"object_size_range must satisfy 0 < low <= high <= 1, got {self.object_size_range}")
        if not 0 < self.aspect_range[0] <= self.aspect_range[1]:
            raise ValueError(f"aspect_range must be positive and increasing, got {self.aspect_range}")
        if not 0 <= self.max_occlusion < 1:
            raise ValueError(f"max_occlusion must lie in [0, 1), got {self.max_occlusion}")
        if self.background not in ("textured", "plain"):
            raise ValueError(f"background must be 'textured' or 'plain', got {self.background!r}")


@dataclass(frozen=True)
class DrawnObject:
    """One shape in a scene: its class index, tight box (x1, y1, x2, y2 integers, x2/y2 exclusive), pixels."""

    label: int
    box_xyxy: tuple[int, int, int, int]
    color: tuple[int, int, int]
    area: int


def shape_mask(shape: str, width: int, height: int) -> np.ndarray:
    """(height, width) bool mask of ``shape`` drawn to fill a ``width`` x ``height`` box."""
    mask = np.zeros((height, width), dtype=np.uint8)
    scale = 1 << DRAW_SHIFT
    if shape == "circle":
        center = (round((width - 1) / 2 * scale), round((height - 1) / 2 * scale))
        axes = (round((width - 1) / 2 * scale), round((height - 1) / 2 * scale))
        cv2.ellipse(mask, center, axes, 0, 0, 360, 1, thickness=-1, lineType=cv2.LINE_8, shift=DRAW_SHIFT)
    else:
        unit = np.asarray(_star_polygon() if shape == "star" else _UNIT_POLYGONS[shape], dtype=np.float64)
        points = np.round(unit * [width - 1, height - 1] * scale).astype(np.int32)  # (P, 2) fixed point x, y
        cv2.fillPoly(mask, [points], 1, lineType=cv2.LINE_8, shift=DRAW_SHIFT)
    return mask.astype(bool)


def _star_polygon(points: int = 5, inner_ratio: float = 0.45) -> np.ndarray:
    """A five-pointed star, point up, scaled to fill the unit box; (2 * points, 2)."""
    angles = -math.pi / 2 + np.arange(2 * points) * math.pi / points
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner_ratio)
    star = np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
    star -= star.min(axis=0)
    return star / star.max(axis=0)


def draw_background(rng: np.random.Generator, size: tuple[int, int], kind: str) -> np.ndarray:
    """(H, W, 3) uint8: one colour (``plain``) or a gradient with colour blobs and random lines (``textured``)."""
    height, width = size
    if kind == "plain":
        return np.broadcast_to(rng.integers(0, 256, 3).astype(np.uint8), (height, width, 3)).copy()
    start, end = rng.uniform(0, 255, (2, 3)).astype(np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    along_x = np.arange(width, dtype=np.float32) * math.cos(angle)  # (W,)
    along_y = np.arange(height, dtype=np.float32) * math.sin(angle)  # (H,)
    position = along_y[:, None] + along_x[None, :]  # (H, W)
    position = (position - position.min()) / max(float(np.ptp(position)), 1e-6)
    image = start + (end - start) * position[..., None]  # (H, W, 3)
    blobs = rng.normal(0, 40, (4, 4, 3)).astype(np.float32)  # low-frequency colour variation
    image += cv2.resize(blobs, (width, height), interpolation=cv2.INTER_LINEAR)
    image = np.clip(image, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(2, 9))):
        first = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        second = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        color = tuple(int(value) for value in rng.integers(0, 256, 3))
        cv2.line(image, first, second, color, int(rng.integers(1, 3)), lineType=cv2.LINE_AA)
    return image


def _pick_color(rng: np.random.Generator, below: np.ndarray, covered_colors: list[np.ndarray]) -> np.ndarray:
    """A random colour that contrasts with the pixels under the shape and with the shapes it covers."""
    references = [below.reshape(-1, 3).mean(axis=0), *covered_colors]  # (P, 3) pixels -> mean colour
    best, best_contrast = None, -1.0
    for _ in range(32):
        color = rng.integers(0, 256, 3).astype(np.float64)
        contrast = min(float(np.abs(color - reference).sum()) for reference in references)
        if contrast >= MIN_CONTRAST:
            return color.astype(np.uint8)
        if contrast > best_contrast:
            best, best_contrast = color, contrast
    assert best is not None  # any contrast beats the initial -1
    return best.astype(np.uint8)


def draw_scene(
    rng: np.random.Generator, size: tuple[int, int], options: SceneOptions
) -> tuple[np.ndarray, list[DrawnObject]]:
    """Draw one scene of ``size`` (height, width): the (H, W, 3) uint8 RGB image and its objects."""
    height, width = size
    image = draw_background(rng, size, options.background)
    owner = np.full((height, width), -1, dtype=np.int32)  # which object each pixel shows, -1 background
    objects: list[DrawnObject] = []
    visible: list[int] = []
    shorter = min(height, width)
    low, high = options.object_size_range
    for _ in range(int(rng.integers(options.min_objects, options.max_objects + 1))):
        for _attempt in range(30):
            label = int(rng.integers(len(options.classes)))
            side = math.exp(rng.uniform(math.log(low), math.log(high))) * shorter
            aspect = math.exp(rng.uniform(*np.log(options.aspect_range)))
            box_width = int(np.clip(round(side * math.sqrt(aspect)), 4, width))
            box_height = int(np.clip(round(side / math.sqrt(aspect)), 4, height))
            left = int(rng.integers(0, width - box_width + 1))
            top = int(rng.integers(0, height - box_height + 1))
            mask = shape_mask(options.classes[label], box_width, box_height)
            region = (slice(top, top + box_height), slice(left, left + box_width))
            covered = owner[region][mask]
            hidden = np.bincount(covered[covered >= 0], minlength=len(objects))  # (objects,) pixels covered
            if any(visible[k] - hidden[k] < (1 - options.max_occlusion) * objects[k].area for k in range(len(objects))):
                continue
            covered_colors = [np.asarray(objects[k].color, dtype=np.float64) for k in np.flatnonzero(hidden)]
            color = _pick_color(rng, image[region][mask], covered_colors)
            image[region][mask] = color
            owner[region][mask] = len(objects)
            visible = [count - int(hidden[k]) for k, count in enumerate(visible)]
            ys, xs = np.nonzero(mask)
            box = (left + int(xs.min()), top + int(ys.min()), left + int(xs.max()) + 1, top + int(ys.max()) + 1)
            objects.append(DrawnObject(label, box, (int(color[0]), int(color[1]), int(color[2])), int(mask.sum())))
            visible.append(int(mask.sum()))
            break
    if options.background == "textured":
        noise = rng.integers(-NOISE_AMPLITUDE, NOISE_AMPLITUDE + 1, image.shape, dtype=np.int16)  # (H, W, 3)
        image = np.clip(image + noise, 0, 255).astype(np.uint8)
    return image, objects
