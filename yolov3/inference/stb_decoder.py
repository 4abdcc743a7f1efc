"""Decoding images with stb_image, as Darknet does, through a shared library that exports ``stbi_load``.

Darknet (built without OpenCV) decodes with stb_image, whose IDCT, chroma upsampling and YCbCr conversion are
its own: libjpeg (OpenCV, PIL) gives pixels up to 3 levels apart, which moves yolov3-tiny's scores by up to
about 1 point (docs/darknet.md). To reproduce Darknet's detections exactly, decode with stb itself: any
shared library that exports ``stbi_load`` and ``stbi_image_free`` will do, e.g. the ``libdarknet.so`` that
Darknet's Makefile builds next to ``darknet``.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import numpy as np

from yolov3.data.image_io import ImageReadError


class StbDecoder:
    """``decoder(path)`` -> (H, W, 3) uint8 RGB, decoded by ``stbi_load`` of ``library_path``."""

    def __init__(self, library_path: str | os.PathLike) -> None:
        path = Path(library_path)
        try:
            self.library = ctypes.CDLL(str(path))
            load, free = self.library.stbi_load, self.library.stbi_image_free
        except (OSError, AttributeError) as error:
            raise OSError(f"{path}: not a shared library exporting stbi_load and stbi_image_free ({error})") from error
        integer = ctypes.POINTER(ctypes.c_int)
        load.argtypes, load.restype = [ctypes.c_char_p, integer, integer, integer, ctypes.c_int], ctypes.c_void_p
        free.argtypes, free.restype = [ctypes.c_void_p], None
        self.path = path

    def __call__(self, image_path: str | os.PathLike) -> np.ndarray:
        image_path = Path(image_path)
        if not image_path.is_file():
            raise ImageReadError(image_path, "no such file" if not image_path.exists() else "not a file")
        width, height, channels = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
        pointer = self.library.stbi_load(
            str(image_path).encode(), ctypes.byref(width), ctypes.byref(height), ctypes.byref(channels), 3
        )
        if not pointer:
            raise ImageReadError(image_path, "stb_image cannot decode it (corrupt, truncated or unsupported format)")
        try:
            size = height.value * width.value * 3
            buffer = (ctypes.c_ubyte * size).from_address(pointer)
            # stb's interleaved rows: (H * W * 3,) -> (H, W, 3)
            return np.frombuffer(memoryview(buffer), dtype=np.uint8).reshape(height.value, width.value, 3).copy()
        finally:
            self.library.stbi_image_free(pointer)
