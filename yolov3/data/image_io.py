"""Reading images from disk as RGB arrays, with errors that name the file."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class ImageReadError(OSError):
    """An image that is missing, unreadable or corrupt; ``str()`` names the file and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


def read_image_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as an (H, W, 3) uint8 RGB array; raises :class:`ImageReadError`."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(path, "no such file" if not path.exists() else "not a file")
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as error:
        raise ImageReadError(path, f"cannot read ({error.strerror or error})") from error
    if data.size == 0:
        raise ImageReadError(path, "empty file")
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise ImageReadError(path, "not a decodable image (corrupt, truncated or unsupported format)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def list_images(directory: str | os.PathLike) -> list[Path]:
    """Image files directly inside ``directory``, sorted by name."""
    return sorted(p for p in Path(directory).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
