"""The official Darknet YOLOv3 weight files: download (resumable) and verify (size and sha256).

:func:`download_weights` stores a file in ``$YOLOV3_WEIGHTS_DIR`` if set, else
``${XDG_CACHE_HOME:-~/.cache}/yolov3/weights`` (``python -m yolov3.weights download NAME``). Downloads go to
``<file>.part`` (resumed with an HTTP Range request when possible), are checked against the size and sha256
below, and only then renamed atomically to their final name.
"""

from __future__ import annotations

import difflib
import hashlib
import http.client
import logging
import os
import types
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

logger = logging.getLogger(__name__)

OFFICIAL_BASE_URL = "https://pjreddie.com/media/files/"
CHUNK_SIZE_BYTES = 1 << 20
TIMEOUT_SECONDS = 30.0


class WeightsDownloadError(OSError):
    """A weights file could not be downloaded, or the downloaded bytes failed verification (an ``OSError``,
    as the network errors it wraps)."""


@dataclass(frozen=True)
class WeightsFile:
    """One downloadable weights file; ``sha256`` is None when no published checksum is known."""

    name: str
    filename: str
    url: str
    size_bytes: int
    sha256: str | None


def _official(name: str, size_bytes: int, sha256: str | None, filename: str | None = None) -> WeightsFile:
    filename = filename or f"{name}.weights"
    return WeightsFile(name, filename, OFFICIAL_BASE_URL + filename, size_bytes, sha256)


# Sizes and checksums come from public sources, never from guesses:
# - yolov3: size in AlexeyAB/darknet issue #1910 and many `wget` logs ("Length: 248007048");
#   sha256 in PurdueDualityLab/TensorFlowModels yolo/utils/file_manager.py, faustomorales/mira
#   mira/detectors/yolov3.py and emgucv/emgucv Emgu.CV.Models/Dnn/Yolo.cs (2021).
# - yolov3-tiny: sha256 in the same three files; size 35434956 from the project brief and public notes.
# - yolov3-spp: sha256 in PurdueDualityLab/TensorFlowModels and emgucv/emgucv (as above). No published
#   byte count was found; the size is derived from the official cfg/yolov3-spp.cfg (20-byte header plus
#   float32 parameters), a computation that reproduces the three published sizes exactly.
# - darknet53.conv.74: size from published `wget` logs ("Length: 162482580"). UNVERIFIED sha256:
#   no public checksum was found, so only the size is checked.
_OFFICIAL_ENTRIES = (
    _official("yolov3", 248_007_048, "523e4e69e1d015393a1b0a441cef1d9c7659e3eb2d7e15f793f060a21b32f297"),
    _official("yolov3-tiny", 35_434_956, "dccea06f59b781ec1234ddf8d1e94b9519a97f4245748a7d4db75d5b7080a42c"),
    _official("yolov3-spp", 252_209_544, "87a1e8c85c763316f34e428f2295e1db9ed4abcec59dd9544f8052f50de327b4"),
    _official("darknet53.conv.74", 162_482_580, None, filename="darknet53.conv.74"),
)
OFFICIAL_WEIGHTS: Mapping[str, WeightsFile] = types.MappingProxyType({entry.name: entry for entry in _OFFICIAL_ENTRIES})


def default_weights_directory() -> Path:
    """Return ``$YOLOV3_WEIGHTS_DIR``, else ``${XDG_CACHE_HOME:-~/.cache}/yolov3/weights``."""
    if explicit_directory := os.environ.get("YOLOV3_WEIGHTS_DIR"):
        return Path(explicit_directory).expanduser()
    cache_home = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache_home).expanduser() / "yolov3" / "weights"


def resolve_weights(name_or_entry: str | WeightsFile) -> WeightsFile:
    """Look a name up in OFFICIAL_WEIGHTS; an unknown name raises ValueError with a suggestion."""
    if isinstance(name_or_entry, WeightsFile):
        return name_or_entry
    if name_or_entry in OFFICIAL_WEIGHTS:
        return OFFICIAL_WEIGHTS[name_or_entry]
    suggestions = difflib.get_close_matches(name_or_entry, list(OFFICIAL_WEIGHTS), n=1)
    hint = f" Did you mean {suggestions[0]!r}?" if suggestions else ""
    known = ", ".join(OFFICIAL_WEIGHTS)
    raise ValueError(f"Unknown weights name {name_or_entry!r}.{hint} Known names: {known}.")


def sha256_of_file(path: Path) -> str:
    """Return the hex sha256 digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(CHUNK_SIZE_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def verification_problem(path: Path, entry: WeightsFile) -> str | None:
    """Return why ``path`` is not a valid copy of ``entry`` (expected vs found), or None if it is."""
    found_size = path.stat().st_size
    if found_size != entry.size_bytes:
        return f"size mismatch: expected {entry.size_bytes} bytes, found {found_size} bytes"
    if entry.sha256 is None:
        logger.warning("%s has no published sha256; only its size was checked", entry.filename)
        return None
    found_sha256 = sha256_of_file(path)
    if found_sha256 != entry.sha256:
        return f"sha256 mismatch: expected {entry.sha256}, found {found_sha256}"
    return None


def _fetch_into(entry: WeightsFile, part_path: Path, progress: bool, allow_resume: bool = True) -> None:
    """Stream ``entry.url`` into ``part_path``, appending after existing bytes when the server allows."""
    offset = part_path.stat().st_size if allow_resume and part_path.exists() else 0
    if offset == entry.size_bytes:
        return  # A complete .part from an earlier run; it is verified next.
    headers = {"User-Agent": "yolov3-weights-downloader"}
    if 0 < offset < entry.size_bytes:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(entry.url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS)
    except urllib.error.HTTPError as error:
        if error.code != 416 or "Range" not in headers:
            raise
        logger.info("Server refused the resume range; restarting %s from zero", entry.filename)
        return _fetch_into(entry, part_path, progress, allow_resume=False)
    with response:
        resumed = "Range" in headers and response.status == 206
        if resumed and not response.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
            logger.info("Server sent an unexpected range; restarting %s from zero", entry.filename)
            return _fetch_into(entry, part_path, progress, allow_resume=False)
        if resumed:
            logger.info("Resuming %s at byte %d", entry.filename, offset)
        else:
            offset = 0  # A plain 200 answer carries the whole file again.
        bar_options = {"unit": "B", "unit_scale": True, "desc": entry.filename, "disable": not progress}
        with (
            open(part_path, "ab" if resumed else "wb") as output,
            tqdm(total=entry.size_bytes, initial=offset, **bar_options) as progress_bar,
        ):
            while chunk := response.read(CHUNK_SIZE_BYTES):
                output.write(chunk)
                progress_bar.update(len(chunk))


def download_weights(
    name_or_entry: str | WeightsFile,
    directory: str | os.PathLike[str] | None = None,
    *,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Download (or reuse) a verified weights file and return its final path."""
    entry = resolve_weights(name_or_entry)
    target_directory = Path(directory).expanduser() if directory is not None else default_weights_directory()
    final_path = target_directory / entry.filename
    part_path = final_path.with_name(entry.filename + ".part")

    if final_path.exists() and not force:
        problem = verification_problem(final_path, entry)
        if problem is None:
            logger.info("%s is already present and verified at %s", entry.filename, final_path)
            return final_path
        logger.warning("Existing %s is invalid (%s); downloading it again", final_path, problem)
    if force:
        part_path.unlink(missing_ok=True)

    target_directory.mkdir(parents=True, exist_ok=True)
    manual_hint = f"You can download it by hand from {entry.url} and place it at {final_path}"
    logger.info("Downloading %s to %s", entry.url, final_path)
    try:
        _fetch_into(entry, part_path, progress)
    except urllib.error.HTTPError as error:
        raise WeightsDownloadError(f"{entry.url} answered HTTP {error.code} {error.reason}. {manual_hint}.") from error
    except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as error:
        reason = getattr(error, "reason", error)
        raise WeightsDownloadError(
            f"Could not reach the host for {entry.url} ({reason}). {manual_hint}. "
            f"Any partial download is kept in {part_path} and resumed on the next run."
        ) from error

    problem = verification_problem(part_path, entry)
    if problem is not None:
        part_path.unlink(missing_ok=True)
        raise WeightsDownloadError(f"Downloaded {entry.filename} failed verification ({problem}); removed {part_path}.")
    os.replace(part_path, final_path)
    logger.info("Saved verified %s", final_path)
    return final_path


def _presence(directory: Path, entry: WeightsFile) -> str:
    final_path = directory / entry.filename
    if final_path.exists():
        return "yes" if final_path.stat().st_size == entry.size_bytes else "wrong size"
    return "partial" if final_path.with_name(entry.filename + ".part").exists() else "no"


def format_weights_table(directory: Path) -> str:
    """Render the known weights as a table with a presence column for ``directory``."""
    rows = [("NAME", "FILE", "SIZE (MB)", "SHA256", "PRESENT")]
    for entry in OFFICIAL_WEIGHTS.values():
        checksum = entry.sha256[:12] if entry.sha256 else "unverified"
        size_megabytes = f"{entry.size_bytes / 1e6:.1f}"
        rows.append((entry.name, entry.filename, size_megabytes, checksum, _presence(directory, entry)))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )
