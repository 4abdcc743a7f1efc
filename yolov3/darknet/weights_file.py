"""Darknet ``.weights`` files: the header, and the float32 parameters of every [convolutional] layer.

Layout (little-endian): int32 major, minor, revision; ``seen`` (images trained on) as int64 when
``major * 10 + minor >= 2``, else int32; then, for each [convolutional] layer in cfg order: with batch
norm, beta (bias), gamma (scale), running mean, running variance, each ``filters`` floats; without,
the conv bias; then the conv weights (filters x in/groups x size x size).

Darknet itself stops quietly at the end of a short file; here a file must hold exactly the floats the
layers need, or at least those of the layers below ``cutoff`` (Darknet's ``load_weights_upto``), and the
error says how many were expected and found.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from yolov3.atomic import write_bytes_atomic


class WeightsFileError(ValueError):
    """A ``.weights`` file that does not fit the network; the message names the file."""


@dataclass(frozen=True)
class WeightsHeader:
    """The header of a ``.weights`` file; ``seen`` counts training images."""

    major: int = 0
    minor: int = 2
    revision: int = 0
    seen: int = 0

    @property
    def seen_is_int64(self) -> bool:
        return self.major * 10 + self.minor >= 2 and self.major < 1000 and self.minor < 1000

    @property
    def size_bytes(self) -> int:
        return 12 + (8 if self.seen_is_int64 else 4)

    def to_bytes(self) -> bytes:
        seen_format = "<q" if self.seen_is_int64 else "<i"
        return struct.pack("<3i", self.major, self.minor, self.revision) + struct.pack(seen_format, self.seen)


@dataclass(frozen=True)
class ConvParameters:
    """The tensors of one [convolutional] layer, in the order a ``.weights`` file stores them."""

    layer_index: int
    conv: nn.Conv2d
    bn: nn.BatchNorm2d | None
    flipped: bool = False  # ``flipped=1``: the file holds the weights transposed (load_convolutional_weights)

    def tensors(self) -> list[torch.Tensor]:
        weight = self.conv.weight
        if self.flipped:  # Darknet's transpose_matrix(weights, rows=in/groups*k*k, cols=filters) after reading
            weight = weight.view(weight.shape[0], -1).t()  # (F, C/g, k, k) -> (F, C/g*k*k) -> (C/g*k*k, F): a view
        if self.bn is not None:
            mean, var = self.bn.running_mean, self.bn.running_var
            if mean is None or var is None:
                raise WeightsFileError(f"layer {self.layer_index}: a batch norm without running statistics")
            return [self.bn.bias, self.bn.weight, mean, var, weight]
        if self.conv.bias is None:
            raise WeightsFileError(f"layer {self.layer_index}: a conv without batch norm needs a bias")
        return [self.conv.bias, weight]

    @property
    def num_floats(self) -> int:
        return sum(tensor.numel() for tensor in self.tensors())


def read_header(path: Path, data: bytes) -> WeightsHeader:
    if len(data) < 16:
        raise WeightsFileError(f"{path}: {len(data)} bytes is too short for a Darknet .weights header")
    major, minor, revision = struct.unpack_from("<3i", data)
    header = WeightsHeader(major, minor, revision, 0)
    seen_format = "<q" if header.seen_is_int64 else "<i"
    if len(data) < header.size_bytes:
        raise WeightsFileError(f"{path}: truncated header ({len(data)} bytes, need {header.size_bytes})")
    (seen,) = struct.unpack_from(seen_format, data, 12)
    return WeightsHeader(major, minor, revision, seen)


def _select(layers: Sequence[ConvParameters], cutoff: int | None) -> list[ConvParameters]:
    return [layer for layer in layers if cutoff is None or layer.layer_index < cutoff]


def read_weights_file(path: str | os.PathLike) -> tuple[WeightsHeader, np.ndarray]:
    """The header and every float32 of a ``.weights`` file (a read-only view; errors name the file)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise WeightsFileError(f"{path}: cannot read weights file ({error.strerror or error})") from error
    header = read_header(path, data)
    body = len(data) - header.size_bytes
    if body % 4:
        raise WeightsFileError(
            f"{path}: {body:,} bytes after the {header.size_bytes}-byte header is not a whole number of float32 "
            f"values ({body // 4:,} floats and {body % 4} stray bytes); the file is damaged or too long"
        )
    return header, np.frombuffer(data, dtype="<f4", offset=header.size_bytes)


def copy_floats(layer: ConvParameters, floats: np.ndarray, offset: int) -> int:
    """Copy ``layer``'s tensors from ``floats[offset:]``; returns the offset after them."""
    with torch.no_grad():
        for tensor in layer.tensors():
            values = floats[offset : offset + tensor.numel()].reshape(tensor.shape)
            tensor.copy_(torch.from_numpy(values.copy()))
            offset += tensor.numel()
    return offset


def load_weights(path: str | os.PathLike, layers: Sequence[ConvParameters], cutoff: int | None = None) -> WeightsHeader:
    """Copy a ``.weights`` file into ``layers`` (those with index < ``cutoff``).

    Without ``cutoff`` the file must hold exactly the floats of every layer. With ``cutoff`` only the first
    layers are read, as Darknet's ``load_weights_upto`` does: the file may be longer (a whole detector read as a
    backbone), but one shorter than those layers is an error.
    """
    path = Path(path)
    header, floats = read_weights_file(path)
    selected = _select(layers, cutoff)
    found, expected = floats.size, sum(layer.num_floats for layer in selected)
    if found < expected or (cutoff is None and found > expected):
        scope = f"layers 0..{cutoff - 1}" if cutoff is not None else "all layers"
        message = (
            f"{path}: expected {expected:,} floats for {scope} ({len(selected)} convolutional), found {found:,}; "
            + ("the file is truncated" if found < expected else "the file is too long")
        )
        running = 0
        for layer in _select(layers, None):
            running += layer.num_floats
            if running == found:
                message += f". It fits exactly with cutoff={layer.layer_index + 1} (a backbone-only file?)"
                break
        if found > expected:
            message += ". To read only its first layers, give a cutoff"
        raise WeightsFileError(message)
    offset = 0
    for layer in selected:
        offset = copy_floats(layer, floats, offset)
    return header


def save_weights(
    path: str | os.PathLike,
    layers: Sequence[ConvParameters],
    header: WeightsHeader | None = None,
    cutoff: int | None = None,
) -> None:
    """Write ``layers`` (those with index < ``cutoff``) as a ``.weights`` file, atomically."""
    path = Path(path)
    header = header or WeightsHeader()
    chunks = [header.to_bytes()]
    with torch.no_grad():
        for layer in _select(layers, cutoff):
            for tensor in layer.tensors():
                chunks.append(tensor.detach().to("cpu", torch.float32).contiguous().numpy().astype("<f4").tobytes())
    write_bytes_atomic(path, b"".join(chunks))
