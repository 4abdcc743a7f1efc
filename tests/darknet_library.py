"""Test helpers: Darknet's own image functions through ``ctypes`` on the built ``libdarknet.so``.

``image`` is Darknet's struct (``include/darknet.h``): ``int w, h, c; float *data`` with the pixels planar
(channel, row, column), RGB in 0..1.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np


class DarknetImage(ctypes.Structure):
    _fields_ = [
        ("w", ctypes.c_int),
        ("h", ctypes.c_int),
        ("c", ctypes.c_int),
        ("data", ctypes.POINTER(ctypes.c_float)),
    ]


class DarknetImageLibrary:
    """``load_image_color``, ``resize_image`` and ``letterbox_image`` of one ``libdarknet.so``."""

    def __init__(self, library_path: Path) -> None:
        self.library = ctypes.CDLL(str(library_path))
        for name, arguments in (
            ("load_image_color", [ctypes.c_char_p, ctypes.c_int, ctypes.c_int]),
            ("resize_image", [DarknetImage, ctypes.c_int, ctypes.c_int]),
            ("letterbox_image", [DarknetImage, ctypes.c_int, ctypes.c_int]),
        ):
            function = getattr(self.library, name)
            function.argtypes, function.restype = arguments, DarknetImage
        self.library.free_image.argtypes, self.library.free_image.restype = [DarknetImage], None

    def _to_numpy(self, image: DarknetImage) -> np.ndarray:
        """A Darknet image -> (H, W, C) float32 (a copy); the Darknet image is freed."""
        planar = np.ctypeslib.as_array(image.data, shape=(image.c, image.h, image.w)).copy()
        self.library.free_image(image)
        return planar.transpose(1, 2, 0).copy()  # (C, H, W) -> (H, W, C)

    def load_image_color(self, path: Path) -> np.ndarray:
        """Darknet's decode (stb_image) of an image file, (H, W, 3) float32 in 0..1."""
        return self._to_numpy(self.library.load_image_color(str(path).encode(), 0, 0))

    def _call(self, name: str, image: np.ndarray, width: int, height: int) -> np.ndarray:
        planar = np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32)  # (H, W, C) -> (C, H, W)
        pointer = planar.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        source = DarknetImage(image.shape[1], image.shape[0], image.shape[2], pointer)
        return self._to_numpy(getattr(self.library, name)(source, width, height))

    def resize_image(self, image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """Darknet's ``resize_image`` of an (H, W, C) float image to ``size`` (height, width)."""
        return self._call("resize_image", image, size[1], size[0])

    def letterbox_image(self, image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """Darknet's ``letterbox_image`` of an (H, W, C) float image into ``size`` (height, width)."""
        return self._call("letterbox_image", image, size[1], size[0])
