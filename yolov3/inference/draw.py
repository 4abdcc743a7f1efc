"""Drawing detections on an image: a box and a "name score" label per detection, one stable colour per class."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import cv2
import numpy as np
import torch

# Matplotlib's tab20 colours, the ten strong ones first, then their light partners: classes 0..9 differ most.
PALETTE_HEX = (
    "1f77b4", "ff7f0e", "2ca02c", "d62728", "9467bd", "8c564b", "e377c2", "7f7f7f", "bcbd22", "17becf",
    "aec7e8", "ffbb78", "98df8a", "ff9896", "c5b0d5", "c49c94", "f7b6d2", "c7c7c7", "dbdb8d", "9edae5",
)  # fmt: skip


def class_colour(label: int) -> tuple[int, int, int]:
    """The RGB colour of class ``label``: the same on every call and in every run (cycling through 20 colours)."""
    code = PALETTE_HEX[label % len(PALETTE_HEX)]
    return int(code[0:2], 16), int(code[2:4], 16), int(code[4:6], 16)


def text_colour(background_rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white, whichever reads better on ``background_rgb`` (by its luma)."""
    red, green, blue = background_rgb
    return (0, 0, 0) if 0.299 * red + 0.587 * green + 0.114 * blue > 140 else (255, 255, 255)


def _to_numpy(values: torch.Tensor | np.ndarray) -> np.ndarray:
    return values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)


def label_text(label: int, score: float, class_names: Sequence[str] | None) -> str:
    """``"dog 0.87"``; the class index when there are no names for it."""
    name = class_names[label] if class_names is not None and 0 <= label < len(class_names) else str(label)
    return f"{name} {score:.2f}"


def draw_detections(
    image_rgb: np.ndarray,
    detections: Mapping[str, torch.Tensor | np.ndarray],
    class_names: Sequence[str] | None = None,
) -> np.ndarray:
    """A copy of the (H, W, 3) uint8 RGB image with ``detections`` (``boxes`` xyxy in its pixels, ``scores``,
    ``labels``) drawn; the lowest score is drawn first so that the best boxes stay on top."""
    canvas = np.ascontiguousarray(image_rgb).copy()
    height, width = canvas.shape[:2]
    thickness = max(1, round(min(height, width) / 300))
    font_scale = max(0.4, min(height, width) / 900)
    boxes_xyxy = _to_numpy(detections["boxes"]).reshape(-1, 4)
    scores = _to_numpy(detections["scores"]).reshape(-1)
    labels = _to_numpy(detections["labels"]).reshape(-1).astype(np.int64)
    for index in np.argsort(scores, kind="stable"):
        left, top, right, bottom = (round(float(value)) for value in boxes_xyxy[index])
        colour = class_colour(int(labels[index]))
        cv2.rectangle(canvas, (left, top), (right, bottom), colour, thickness, lineType=cv2.LINE_AA)
        text = label_text(int(labels[index]), float(scores[index]), class_names)
        (text_width, text_height), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
        # The label sits on top of the box, or inside it when the box touches the top edge.
        text_top = top - text_height - baseline if top - text_height - baseline >= 0 else top
        cv2.rectangle(canvas, (left, text_top), (left + text_width, text_top + text_height + baseline), colour, -1)
        cv2.putText(
            canvas,
            text,
            (left, text_top + text_height),
            cv2.FONT_HERSHEY_SIMPLEX,
            font_scale,
            text_colour(colour),
            thickness,
            lineType=cv2.LINE_AA,
        )
    return canvas
