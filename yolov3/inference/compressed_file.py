"""Reading the compressed model file (``.yolov3c``): what inference needs to load one.

The layout, and the writer, are in :mod:`yolov3.compression.storage` (Deep Compression: pruning, weight
sharing, Huffman coding). Reading needs none of the compressor: the header is JSON, dense tensors are raw
little-endian values, and each shared weight is a codebook, a stream of cluster indices and a stream of
relative positions, each stream ``raw`` (bit-packed), ``huffman`` (:mod:`yolov3.huffman`) or ``constant``.
The model is rebuilt with ``yolov3.models.create_model`` and gets exactly the tensors that were written.
"""

from __future__ import annotations

import json
import math
import os
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from yolov3.huffman import HuffmanError, HuffmanStream, huffman_decode
from yolov3.models import create_model

MAGIC = b"YOLOV3C\n"
FORMAT_VERSION = 1
PREAMBLE = struct.Struct("<8sII")  # magic, format version, header length


class CompressedFileError(ValueError):
    """A compressed model file that cannot be read; the message names the file."""


@dataclass
class SharedLayer:
    """One layer's shared weights: ``weight = 0`` except ``weight[mask] = codebook[index]``.

    ``index`` lists the cluster of each non-zero weight in row-major order of ``mask``.
    """

    codebook: torch.Tensor  # (k,) float32
    index: torch.Tensor  # (number of non-zero weights,) int16
    mask: torch.Tensor  # bool, the weight's shape

    @property
    def k(self) -> int:
        return len(self.codebook)

    @property
    def index_bits(self) -> int:
        """Bits of one cluster index, ceil(log2 k)."""
        return max(1, math.ceil(math.log2(self.k)))

    @property
    def num_nonzero(self) -> int:
        return len(self.index)

    def weight(self) -> torch.Tensor:
        """The shared weight tensor ``W = C[I]`` with zeros where pruned."""
        values = self.codebook[self.index.long()]
        return torch.zeros(self.mask.shape, dtype=self.codebook.dtype, device=self.codebook.device).masked_scatter(
            self.mask, values
        )


@dataclass
class SharedWeights:
    """The shared layers of a model, by module name (``model.get_submodule(name).weight``)."""

    layers: dict[str, SharedLayer]


@dataclass
class StoredModel:
    """What a compressed file holds: the model (CPU, eval mode), its spec, metadata and shared layers."""

    model: nn.Module
    model_spec: dict[str, Any]
    metadata: dict[str, Any]
    shared: SharedWeights
    header: dict[str, Any] = field(repr=False)
    payload_bytes: int


# -- streams ----------------------------------------------------------------------------------------------


def decode_positions(symbols: np.ndarray, position_bits: int) -> np.ndarray:
    """Flat positions of the non-zero weights from :func:`encode_positions` symbols."""
    filler = 2**position_bits - 1
    is_weight = symbols != filler
    ends = np.cumsum(np.where(is_weight, symbols + 1, filler))
    return ends[is_weight] - 1


def unpack_fixed_width(data: bytes, count: int, width: int) -> np.ndarray:
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))[: count * width]
    if len(bits) != count * width:
        raise ValueError(f"{len(data)} bytes cannot hold {count} symbols of {width} bits")
    weights = 1 << np.arange(width - 1, -1, -1)
    return bits.reshape(count, width).astype(np.int64) @ weights  # (count * width,) -> (count, width) -> (count,)


def decode_stream(entry: Mapping[str, Any], data: bytes) -> np.ndarray:
    count, width = int(entry["count"]), int(entry["width"])
    if entry["coding"] == "constant":
        return np.full(count, int(entry["value"]), dtype=np.int64)
    if entry["coding"] == "raw":
        return unpack_fixed_width(data, count, width)
    if entry["coding"] == "huffman":
        symbols = huffman_decode(HuffmanStream.from_bytes(data))
        if len(symbols) != count:
            raise ValueError(f"Huffman stream holds {len(symbols)} symbols, the header says {count}")
        return symbols
    raise ValueError(f"unknown stream coding {entry['coding']!r}")


# -- reading ------------------------------------------------------------------------------------------------


def read_header(path: str | os.PathLike) -> tuple[dict[str, Any], bytes]:
    """The header and payload of a compressed file, checked for magic, version, length and CRC32."""
    path = Path(path)
    if not path.is_file():
        raise CompressedFileError(f"{path}: no such compressed model file")
    data = path.read_bytes()
    if len(data) < PREAMBLE.size or data[: len(MAGIC)] != MAGIC:
        raise CompressedFileError(f"{path}: not a yolov3 compressed model file (no {MAGIC!r} magic)")
    _, version, header_length = PREAMBLE.unpack_from(data)
    if version > FORMAT_VERSION:
        raise CompressedFileError(f"{path}: format version {version} is newer than {FORMAT_VERSION}")
    start = PREAMBLE.size + header_length
    if len(data) < start:
        raise CompressedFileError(f"{path}: truncated: {len(data)} bytes, the header alone needs {start}")
    try:
        header = json.loads(data[PREAMBLE.size : start].decode("utf-8"))
        expected, crc = int(header["payload_bytes"]), int(header["payload_crc32"])
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise CompressedFileError(f"{path}: corrupt header ({error})") from error
    payload = data[start:]
    if len(payload) != expected:
        raise CompressedFileError(f"{path}: truncated or padded: payload of {len(payload)} bytes, expected {expected}")
    if zlib.crc32(payload) != crc:
        raise CompressedFileError(f"{path}: corrupt payload (CRC32 mismatch)")
    return header, payload


def _dense(entry: Mapping[str, Any], payload: bytes) -> torch.Tensor:
    blob = payload[entry["offset"] : entry["offset"] + entry["length"]]
    numpy_dtype = {"float32": "<f4", "float16": "<f2", "int64": "<i8"}[entry["dtype"]]
    array = np.frombuffer(blob, dtype=numpy_dtype).copy()
    tensor = torch.from_numpy(array)
    return tensor.to(torch.float32) if entry["dtype"] == "float16" else tensor


def _shared(entry: Mapping[str, Any], payload: bytes) -> SharedLayer:
    shape, k = tuple(entry["shape"]), int(entry["k"])
    codebook = _dense(entry["codebook"], payload)
    streams = {}
    for part in ("positions", "clusters"):
        blob = payload[entry[part]["offset"] : entry[part]["offset"] + entry[part]["length"]]
        streams[part] = decode_stream(entry[part], blob)
    positions = decode_positions(streams["positions"], int(entry["position_bits"]))
    clusters = streams["clusters"]
    numel = int(np.prod(shape))
    if len(codebook) != k or len(positions) != len(clusters) or (len(positions) and positions[-1] >= numel):
        raise ValueError("codebook, positions and clusters disagree")
    if len(clusters) and (clusters.min() < 0 or clusters.max() >= k):
        raise ValueError(f"cluster index outside the codebook of {k}")
    mask = torch.zeros(numel, dtype=torch.bool)
    mask[torch.from_numpy(positions)] = True
    return SharedLayer(codebook, torch.from_numpy(clusters).to(torch.int16), mask.reshape(shape))  # (numel,) -> shape


def read_compressed_file(path: str | os.PathLike) -> StoredModel:
    """Read a compressed file: the model (CPU, eval mode) with exactly the tensors that were written."""
    header, payload = read_header(path)
    try:
        spec = header["model"]
        model = create_model(spec["name"], **spec.get("kwargs", {}))
        state, shared = {}, {}
        for entry in header["tensors"]:
            if entry["encoding"] == "shared":
                layer = _shared(entry, payload)
                shared[entry["name"].removesuffix(".weight")] = layer
                state[entry["name"]] = layer.weight()
            else:
                state[entry["name"]] = _dense(entry, payload).reshape(entry["shape"])  # (numel,) -> its shape
        model.load_state_dict(state)
    except (HuffmanError, KeyError, TypeError, ValueError, RuntimeError) as error:
        raise CompressedFileError(f"{path}: cannot rebuild the model ({type(error).__name__}: {error})") from error
    model.eval()
    return StoredModel(model, spec, header.get("metadata", {}), SharedWeights(shared), header, len(payload))


def read_compressed(path: str | os.PathLike) -> nn.Module:
    """The model stored in a compressed file (CPU, eval mode); see :func:`read_compressed_file`."""
    return read_compressed_file(path).model
