"""What ``detect --source`` names: image files, folders of images, glob patterns, and video files.

:func:`resolve_sources` expands every argument (in order, duplicates dropped) into image and video paths;
:func:`read_video_frames` yields a video's frames as RGB arrays and :class:`VideoWriter` writes annotated
frames back with the source's frame rate and size (OpenCV's ``VideoCapture`` / ``VideoWriter``).
"""

from __future__ import annotations

import glob
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np

from yolov3.data.image_io import IMAGE_SUFFIXES, list_images

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv")
MEDIA_SUFFIXES = IMAGE_SUFFIXES + VIDEO_SUFFIXES


class SourceError(ValueError):
    """A ``--source`` that names nothing to detect on; the message names the argument."""


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def _media_in(paths: Sequence[Path]) -> list[Path]:
    return [path for path in paths if path.suffix.lower() in MEDIA_SUFFIXES and path.is_file()]


def resolve_source(source: str) -> list[Path]:
    """One argument: a file (image or video), a directory's images and videos (sorted), or a glob's (sorted)."""
    path = Path(source)
    if path.is_dir():
        found = sorted(set(list_images(path)) | set(_media_in(sorted(path.iterdir()))))
        if not found:
            raise SourceError(f"{path}: directory has no images or videos (looked for {', '.join(MEDIA_SUFFIXES)})")
        return found
    if path.is_file():
        return [path]
    if glob.has_magic(source):
        found = _media_in(sorted(Path(name) for name in glob.glob(source, recursive=True)))
        if not found:
            raise SourceError(f"{source}: pattern matched no images or videos (looked for {', '.join(MEDIA_SUFFIXES)})")
        return found
    raise SourceError(f"{path}: no such file or directory")


def resolve_sources(sources: str | Sequence[str]) -> list[Path]:
    """Every argument resolved in order; a path named twice is kept once."""
    if isinstance(sources, str):
        sources = [sources]
    paths: dict[Path, None] = {}
    for source in sources:
        paths.update(dict.fromkeys(resolve_source(source)))
    return list(paths)


def count_frames(path: Path) -> int | None:
    """The frame count the container declares (None when it does not say); for progress bars only."""
    capture = cv2.VideoCapture(str(path))
    try:
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        capture.release()
    return count if count > 0 else None


def read_video_frames(path: Path) -> Iterator[np.ndarray]:
    """The frames of a video file as (H, W, 3) uint8 RGB arrays; ``OSError`` naming the file if it cannot open."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise OSError(f"{path}: cannot open the video (unsupported codec or not a video)")
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                return
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    finally:
        capture.release()


def video_frame_rate(path: Path, default: float = 25.0) -> float:
    capture = cv2.VideoCapture(str(path))
    try:
        rate = capture.get(cv2.CAP_PROP_FPS)
    finally:
        capture.release()
    return rate if rate and rate > 0 else default


class VideoWriter:
    """Writes RGB frames to ``path`` (``mp4v`` for .mp4/.mov, ``MJPG`` for .avi/.mkv), opened at the first frame."""

    def __init__(self, path: Path, frame_rate: float) -> None:
        self.path, self.frame_rate = path, frame_rate
        self.writer: cv2.VideoWriter | None = None

    def write(self, frame_rgb: np.ndarray) -> None:
        if self.writer is None:
            codec = "MJPG" if self.path.suffix.lower() in (".avi", ".mkv") else "mp4v"
            height, width = frame_rgb.shape[:2]
            self.writer = cv2.VideoWriter(
                str(self.path), cv2.VideoWriter.fourcc(*codec), self.frame_rate, (width, height)
            )
            if not self.writer.isOpened():
                raise OSError(f"{self.path}: cannot write the video (codec {codec} unavailable)")
        self.writer.write(cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
