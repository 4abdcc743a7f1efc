"""What a dataset does with bad data: skip it with a counted, logged warning, or raise an error naming it.

Every dataset format uses one :class:`BadDataPolicy` for these cases (the ``kind`` names are the keys of
:meth:`BadDataPolicy.counts` and of ``dataset.bad_data_report()``):

- ``unreadable_image``: missing, unreadable, corrupt or truncated image. ``skip`` drops it (at scan time when
  the header cannot be read; on access the dataset returns the next readable sample instead). Found on access,
  it is warned and counted once per file in the main process, DataLoader workers included
  (:class:`UnreadableImages`).
- ``malformed_label``: a label line or file that does not parse (wrong field count, not a number, broken XML).
  ``skip`` drops the line (the rest of the file is kept).
- ``unknown_class``: a class index or name that is not in the dataset's names. ``skip`` drops the box.
- ``empty_box``: zero or negative width or height. ``skip`` drops the box.
- ``box_outside_image``: a box entirely outside its image. ``skip`` drops the box.
- ``box_clipped``: a box partly outside its image. It is clipped to the image and counted under either
  policy (clipping keeps the object, so it is not an error).
- ``filename_mismatch``: a VOC ``<filename>`` that disagrees with the annotation's id. The image is found as
  ``JPEGImages/<id>.jpg`` (the devkit's rule); the stale field is counted and warned once per file under
  either policy.

With ``raise``, the first problem raises :class:`BadDataError` (``ImageReadError`` for images); messages
name the file, the line for text labels, what was found and what was expected.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Literal

import numpy as np

from yolov3.data.image_io import ImageReadError

LOGGER = logging.getLogger(__name__)

BadDataMode = Literal["skip", "raise"]
BAD_DATA_KINDS = (
    "unreadable_image",
    "malformed_label",
    "unknown_class",
    "empty_box",
    "box_outside_image",
    "box_clipped",
    "filename_mismatch",
)
JPEG_END_MARKER = b"\xff\xd9"
PNG_END_CHUNK = b"IEND\xaeB`\x82"


# A box coordinate this far outside its image (pixels) is clipped silently.
CLIP_TOLERANCE_PIXELS = 0.01


class BadDataError(ValueError):
    """A label or annotation that cannot be used; ``str()`` names the file (and line) and what was expected."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class BadDataPolicy:
    """Counts and logs bad data (``skip``) or raises on the first problem (``raise``).

    Warnings are logged for the first ``log_limit`` problems of each kind; later ones are only counted
    (``log_summary`` logs the totals).
    """

    def __init__(self, mode: BadDataMode = "skip", log_limit: int = 10) -> None:
        if mode not in ("skip", "raise"):
            raise ValueError(f"bad_data must be 'skip' or 'raise', got {mode!r}")
        self.mode = mode
        self.log_limit = log_limit
        self._counts: Counter[str] = Counter()

    def problem(self, kind: str, message: str) -> None:
        """Data that must be dropped: raise under ``raise``, else count and log."""
        if kind not in BAD_DATA_KINDS:
            raise ValueError(f"unknown bad data kind {kind!r}; expected one of {', '.join(BAD_DATA_KINDS)}")
        if self.mode == "raise":
            raise BadDataError(kind, message)
        self._count(kind, f"{message} (skipped)")

    def image_problem(self, error: ImageReadError) -> None:
        """An image that cannot be read: re-raise under ``raise``, else count and log."""
        if self.mode == "raise":
            raise error
        self._count("unreadable_image", f"{error} (skipped)")

    def fixed(self, kind: str, message: str) -> None:
        """Data that was repaired (a clipped box): counted and logged under either policy."""
        self._count(kind, message)

    def _count(self, kind: str, message: str) -> None:
        self._counts[kind] += 1
        if self._counts[kind] <= self.log_limit:
            LOGGER.warning("%s", message)
            if self._counts[kind] == self.log_limit:
                LOGGER.warning("further '%s' problems are counted but not logged", kind)

    def counts(self) -> dict[str, int]:
        """How many problems of each kind were seen (every kind listed, zeros included)."""
        return {kind: self._counts[kind] for kind in BAD_DATA_KINDS}

    def log_summary(self, source: str) -> None:
        """One log line with the totals, if there was anything to report."""
        found = {kind: count for kind, count in self.counts().items() if count}
        if found:
            details = ", ".join(f"{count} {kind}" for kind, count in found.items())
            LOGGER.warning("%s: bad data: %s (policy %r)", source, details, self.mode)

    def check_boxes(
        self, boxes_xyxy: np.ndarray, image_size: tuple[int, int], describe: Callable[[int], str]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Validate (M, 4) pixel boxes against an image of ``image_size`` (height, width).

        Returns the boxes clipped to the image and a (M,) bool mask of the boxes to keep. ``describe(i)``
        names box ``i`` for messages (file and line). Non-finite and zero-area boxes, and boxes entirely
        outside, are problems; boxes partly outside are clipped and counted.
        """
        with np.errstate(over="ignore"):  # beyond float32: infinite, reported as not finite below
            boxes = np.asarray(boxes_xyxy, dtype=np.float32).reshape(-1, 4)  # (M, 4)
        height, width = image_size
        keep = np.ones(len(boxes), dtype=bool)
        finite = np.isfinite(boxes).all(axis=1)
        for index in np.flatnonzero(~finite):
            self.problem("malformed_label", f"{describe(int(index))}: box {boxes[index].tolist()} is not finite")
            keep[index] = False
        empty = finite & ((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1]))
        for index in np.flatnonzero(empty):
            self.problem(
                "empty_box",
                f"{describe(int(index))}: box {_format_box(boxes[index])} has zero or negative area; "
                "expected x1 < x2 and y1 < y2",
            )
            keep[index] = False
        limits = np.array([width, height, width, height], dtype=np.float32)
        clipped = np.clip(np.nan_to_num(boxes), 0, limits)
        outside = keep & ((clipped[:, 2] <= clipped[:, 0]) | (clipped[:, 3] <= clipped[:, 1]))
        for index in np.flatnonzero(outside):
            self.problem(
                "box_outside_image",
                f"{describe(int(index))}: box {_format_box(boxes[index])} lies outside the {width}x{height} image; "
                f"expected x in 0..{width} and y in 0..{height}",
            )
            keep[index] = False
        # Rounding in label files (normalized YOLO coordinates) leaves boxes a hair outside: not worth a warning.
        changed = keep & (np.abs(clipped - boxes) > CLIP_TOLERANCE_PIXELS).any(axis=1)
        for index in np.flatnonzero(changed):
            self.fixed(
                "box_clipped",
                f"{describe(int(index))}: box {_format_box(boxes[index])} extends outside the {width}x{height} "
                f"image; clipped to {_format_box(clipped[index])}",
            )
        return clipped, keep


class UnreadableImages:
    """Images found unreadable while samples are loaded, warned and counted once per file.

    DataLoader workers are separate processes, so a dataset there cannot warn once per file or keep the count:
    it attaches ``(path, reason)`` to the sample it returns instead (``DetectionSample.image_problems``, then
    ``Batch.image_problems``), and the main process reports every batch's problems here
    (:class:`~yolov3.data.loader.DetectionLoader` does). A file is warned and counted in the dataset's
    ``bad_data`` policy (``unreadable_image``) the first time, however often it is drawn (mosaic draws four
    images per sample) and whichever process read it; :meth:`end_epoch` gives the number of different
    unreadable files met since the last call.
    """

    def __init__(self, policy: BadDataPolicy) -> None:
        self.policy = policy
        self.files: set[str] = set()
        self._epoch_files: set[str] = set()

    def report(self, problems: Iterable[tuple[str, str]]) -> None:
        """``(path, reason)`` pairs met while loading; new files are warned and counted."""
        for path, reason in problems:
            self._epoch_files.add(path)
            if path not in self.files:
                self.files.add(path)
                self.policy.image_problem(ImageReadError(path, reason))

    def end_epoch(self) -> int:
        """How many different unreadable files were met since the last call (and start counting again)."""
        count = len(self._epoch_files)
        self._epoch_files.clear()
        return count


def _format_box(box: np.ndarray) -> str:
    """``[x1, y1, x2, y2]`` in plain decimals (never ``1.23457e+06``), at most two decimal places."""
    return "[" + ", ".join(format_number(value) for value in box.tolist()) + "]"


def format_number(value: float) -> str:
    """``1234567`` -> ``'1,234,567'``, ``12.5`` -> ``'12.5'``: no exponent, whatever the size."""
    if not np.isfinite(value):
        return str(value)
    text = f"{value:,.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def find_truncation(path: str | os.PathLike) -> str | None:
    """Why a JPEG or PNG file looks truncated (its end marker is missing), or None.

    OpenCV decodes a truncated JPEG without an error (the missing rows come out grey), so the end of the
    file is checked: JPEG must end with the EOI marker (trailing zero padding allowed), PNG with IEND.
    Other formats are not checked.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".jpg", ".jpeg", ".png"):
        return None
    try:
        with path.open("rb") as file:
            file.seek(0, os.SEEK_END)
            file.seek(max(0, file.tell() - 64))
            tail = file.read()
    except OSError as error:
        return f"cannot read ({error.strerror or error})"
    if suffix == ".png":
        return None if tail.endswith(PNG_END_CHUNK) else "truncated PNG (no IEND chunk at the end)"
    return None if tail.rstrip(b"\x00").endswith(JPEG_END_MARKER) else "truncated JPEG (no end-of-image marker)"
