"""Turning an RGB image into a network input, the way the model was trained to see it.

:class:`Preprocessing` is part of a model's contract (a checkpoint records it). Two choices make it up:

- the geometry: ``letterbox=True`` keeps the aspect ratio and centres the image in a ``fill`` border
  (Darknet's placement and integer arithmetic), ``letterbox=False`` stretches it to the input size;
- the resampling: ``"opencv"`` (OpenCV's bilinear ``INTER_LINEAR``, half-pixel centres: what our training
  pipeline uses) or ``"darknet"``, Darknet's own two-pass bilinear ``resize_image`` (``src/image.c``) on
  float pixels, with sample positions ``x * (w_in - 1) / (w_out - 1)``, bit for bit in float32.

Their four combinations have names (:data:`RESIZE_MODES`, :meth:`Preprocessing.from_mode`): ``letterbox``
(ours, the default for checkpoints), ``stretch`` (ours without the border), ``darknet`` (pjreddie's
``letterbox_image``: what ``darknet detector test`` feeds the network) and ``darknet-stretch``
(``resize_image`` to the input size: AlexeyAB's default). Pixels are RGB divided by 255 either way.
With ``darknet`` resampling, boxes also go back to the image the way Darknet's ``correct_yolo_boxes`` takes
them (:class:`DarknetLetterbox`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from yolov3.data.letterbox import BoxesT, Letterbox, letterbox_image

RESAMPLINGS = ("opencv", "darknet")
# name -> (letterbox, resampling)
RESIZE_MODES = {
    "letterbox": (True, "opencv"),
    "stretch": (False, "opencv"),
    "darknet": (True, "darknet"),
    "darknet-stretch": (False, "darknet"),
}


@dataclass(frozen=True)
class Preprocessing:
    """How images become network inputs: letterbox (``letterbox=True``) or stretch, ``fill`` (0..1) for the
    border, and the ``resampling`` kernel: ``"opencv"`` or Darknet's own ``"darknet"``."""

    letterbox: bool = True
    fill: float = 0.5
    resampling: str = "opencv"

    def __post_init__(self) -> None:
        if not 0.0 <= self.fill <= 1.0:
            raise ValueError(f"Preprocessing.fill must be in 0..1 (pixels are RGB/255), got {self.fill}")
        if self.resampling not in RESAMPLINGS:
            raise ValueError(f"Preprocessing.resampling must be one of {RESAMPLINGS}, got {self.resampling!r}")

    @classmethod
    def from_mode(cls, mode: str, fill: float = 0.5) -> Preprocessing:
        """The named mode of :data:`RESIZE_MODES`: letterbox, stretch, darknet or darknet-stretch."""
        if mode not in RESIZE_MODES:
            raise ValueError(f"unknown resize mode {mode!r}; expected one of {sorted(RESIZE_MODES)}")
        letterbox, resampling = RESIZE_MODES[mode]
        return cls(letterbox=letterbox, fill=fill, resampling=resampling)

    @property
    def mode(self) -> str:
        """The name of this combination in :data:`RESIZE_MODES`."""
        return next(name for name, value in RESIZE_MODES.items() if value == (self.letterbox, self.resampling))


class DarknetLetterbox(Letterbox):
    """Darknet's placement, and Darknet's way back: ``correct_yolo_boxes`` undoes the letterbox with a
    padding of ``(net - new) / 2.`` in floating point, while ``letterbox_image`` embedded the image at the
    integer ``(net - new) / 2``: half a network pixel apart when ``net - new`` is odd. Darknet's boxes carry
    that shift, so ours do too."""

    def boxes_to_original(self, boxes_xyxy: BoxesT, clip: bool = True) -> BoxesT:
        net_height, net_width = self.network_size
        new_height, new_width = self.resized_size
        exact = Letterbox(
            self.original_size,
            self.network_size,
            self.resized_size,
            (net_height - new_height) / 2.0,  # float on purpose, as correct_yolo_boxes
            (net_width - new_width) / 2.0,
        )
        return exact.boxes_to_original(boxes_xyxy, clip)


def darknet_letterbox_size(original_size: tuple[int, int], network_size: tuple[int, int]) -> tuple[int, int]:
    """Darknet's (new_height, new_width) of an image letterboxed into the network input, both (H, W).

    ``letterbox_image`` compares ``(float)w / im.w < (float)h / im.h`` in single precision, then scales the
    other side with integer division (at least 1 pixel here; Darknet would make an empty image).
    """
    height, width = original_size
    net_height, net_width = network_size
    if np.float32(net_width) / np.float32(width) < np.float32(net_height) / np.float32(height):
        return max(1, (height * net_width) // width), net_width
    return net_height, max(1, (width * net_height) // height)


def _darknet_samples(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices (low, high) and float32 weights of Darknet's ``resize_image`` along one axis."""
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.float32(size_in - 1) / np.float32(size_out - 1)  # (float)(im.w - 1) / (w - 1)
        positions = np.arange(size_out, dtype=np.float32) * scale  # c * w_scale in float32
    positions = np.where(np.isfinite(positions), positions, np.float32(0.0))  # size_out == 1: see callers
    low = positions.astype(np.int64)  # (int) sx truncates; sx >= 0
    fraction = (positions - low.astype(np.float32)).astype(np.float32)  # dx = sx - ix
    low = np.minimum(low, size_in - 1)
    high = np.minimum(low + 1, size_in - 1)
    return low, high, fraction


def darknet_resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Darknet's ``resize_image`` of an (H, W, C) float32 image to ``size`` (height, width), in float32.

    First along the rows (columns ``c < w-1`` blend ``ix`` and ``ix+1``, the last column copies the last
    pixel), then along the columns (``(1-dy) * part[iy]``, plus ``dy * part[iy+1]`` except on the last row),
    each product and sum rounded to float32 in Darknet's order.
    """
    if image.ndim != 3 or image.dtype != np.float32:
        raise ValueError(f"darknet_resize takes an (H, W, C) float32 image, got shape {image.shape} {image.dtype}")
    out_height, out_width = size
    if min(out_height, out_width) < 1:
        raise ValueError(f"resize target must be positive, got {size}")
    in_height, in_width = image.shape[:2]
    one = np.float32(1.0)

    low, high, dx = _darknet_samples(in_width, out_width)
    low[-1], dx[-1] = in_width - 1, 0.0  # c == w-1 (or im.w == 1): the last pixel itself
    if in_width == 1:
        low[:], dx[:] = 0, 0.0
    weight_low, weight_high = (one - dx)[None, :, None], dx[None, :, None]  # (1, w_out, 1) each
    part = weight_low * image[:, low] + weight_high * image[:, high]  # (H_in, w_out, C)

    low, high, dy = _darknet_samples(in_height, out_height)
    if out_height == 1:  # Darknet divides by zero here; take the first row
        low[:], dy[:] = 0, 0.0
    second = dy.copy()
    second[-1] = 0.0  # the last row (or im.h == 1) has no second term
    if in_height == 1:
        second[:] = 0.0
    resized = (one - dy)[:, None, None] * part[low] + second[:, None, None] * part[high]  # (h_out, w_out, C)
    return resized.astype(np.float32, copy=False)


def darknet_letterbox(
    image: np.ndarray, network_size: tuple[int, int], fill: float = 0.5, keep_aspect: bool = True
) -> tuple[np.ndarray, DarknetLetterbox]:
    """Darknet's ``letterbox_image`` (or ``resize_image`` to the input when not ``keep_aspect``) of an
    (H, W, 3) float32 image: :func:`darknet_resize`, then embedded at ``((w - new_w) / 2, (h - new_h) / 2)``
    in a ``fill`` canvas."""
    original_size = image.shape[:2]
    if min(*original_size, *network_size) < 1:
        raise ValueError(f"sizes must be positive, got image {original_size} and network {network_size}")
    net_height, net_width = network_size
    new_size = darknet_letterbox_size(original_size, network_size) if keep_aspect else (net_height, net_width)
    top, left = (net_height - new_size[0]) // 2, (net_width - new_size[1]) // 2
    canvas = np.full((net_height, net_width, image.shape[2]), fill, dtype=np.float32)
    canvas[top : top + new_size[0], left : left + new_size[1]] = darknet_resize(image, new_size)
    return canvas, DarknetLetterbox(original_size, (net_height, net_width), new_size, top, left)


def preprocess(
    image_rgb_uint8: np.ndarray, input_size: tuple[int, int], preprocessing: Preprocessing = Preprocessing()
) -> tuple[torch.Tensor, Letterbox]:
    """An (H, W, 3) uint8 RGB image -> ((3, height, width) float32 in 0..1, its :class:`Letterbox` placement).

    ``input_size`` is the network's (height, width). Map boxes back with ``placement.boxes_to_original``.
    """
    if image_rgb_uint8.ndim != 3 or image_rgb_uint8.shape[2] != 3 or image_rgb_uint8.dtype != np.uint8:
        raise ValueError(
            f"expected an (H, W, 3) uint8 RGB image, got shape {image_rgb_uint8.shape} dtype {image_rgb_uint8.dtype}"
        )
    height, width = input_size
    placement: Letterbox
    if preprocessing.resampling == "darknet":
        # Darknet's load_image: (float)data / 255. (a double division, rounded to float)
        image_float = (image_rgb_uint8 / 255.0).astype(np.float32)  # (H, W, 3) in 0..1
        canvas, placement = darknet_letterbox(
            image_float, (height, width), fill=preprocessing.fill, keep_aspect=preprocessing.letterbox
        )
    else:
        image_float = image_rgb_uint8.astype(np.float32) / np.float32(255.0)  # (H, W, 3) in 0..1
        canvas, placement = letterbox_image(
            image_float, (height, width), fill=preprocessing.fill, keep_aspect=preprocessing.letterbox
        )
    # (height, width, 3) -> (3, height, width)
    tensor = torch.from_numpy(np.ascontiguousarray(canvas.transpose(2, 0, 1)))
    return tensor, placement
