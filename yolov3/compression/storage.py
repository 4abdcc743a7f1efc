"""The compressed model file (``.yolov3c``): Deep Compression's storage, one binary file, no pickle.

Layout (little-endian)::

    8 bytes   magic b"YOLOV3C\\n"
    uint32    format version (1)
    uint32    H, the header's length
    H bytes   header: UTF-8 JSON
    P bytes   payload: the blobs the header points to (offsets from the payload's start)

The header holds ``model`` (registered builder name and kwargs, for ``yolov3.models.create_model``),
``metadata`` (class names, input size, preprocessing: what inference needs), ``payload_bytes`` and
``payload_crc32`` (a truncated or corrupt file is refused), and ``tensors``: one entry per ``state_dict``
key, in order, either

- ``dense``: the tensor as raw ``float32``, ``float16`` or ``int64`` values (biases, batch-norm parameters
  and statistics, layers that are not shared). A float tensor is written as float16 only when
  ``float_format="float16"`` and every value survives the round trip exactly, so reading is lossless;
- ``shared``: a weight of :mod:`yolov3.compression.sharing`, in three parts: the ``codebook`` (k floats, same
  float rule), the ``clusters`` stream (the cluster index of every non-zero weight, row-major) and the
  ``positions`` stream (sparse positions as relative indices of ``position_bits`` bits: each symbol is the
  number of zeros before the next non-zero weight; the largest symbol, ``2**position_bits - 1``, is the
  paper's filler: that many zeros and no weight, for gaps too long for the index width).

Each stream is stored ``raw`` (fixed width, bit-packed), ``huffman`` (:mod:`yolov3.huffman`)
or ``constant`` (one value repeated: no payload), whichever is smallest unless ``coding`` forces one.
Reading (:mod:`yolov3.inference.compressed_file`, so that inference loads these files without the
compressor) rebuilds the model with ``create_model`` and loads the decoded ``state_dict``: the same tensors bit
for bit, hence bit-identical outputs. Files are written atomically (:func:`yolov3.atomic.atomic_output`).
"""

from __future__ import annotations

import copy
import json
import os
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from yolov3.atomic import atomic_output
from yolov3.compression.report import CompressionReport, report_from_header
from yolov3.compression.sharing import detach_sharing
from yolov3.huffman import huffman_encode
from yolov3.inference.compressed_file import (
    FORMAT_VERSION,
    MAGIC,
    PREAMBLE,
    SharedLayer,
    SharedWeights,
    StoredModel,
    read_compressed_file,
)
from yolov3.models import create_model

DEFAULT_POSITION_BITS = 4
Coding = Literal["auto", "raw", "huffman"]


@dataclass
class CompressedModel(StoredModel):
    """What a compressed file holds (:class:`~yolov3.inference.compressed_file.StoredModel`) and its size report."""

    report: CompressionReport


# -- relative positions -------------------------------------------------------------------------------------


def encode_positions(mask: torch.Tensor, position_bits: int) -> np.ndarray:
    """The relative-index symbols of the non-zero positions of ``mask`` (row-major), with fillers."""
    filler = 2**position_bits - 1
    positions = np.flatnonzero(mask.reshape(-1).cpu().numpy())  # the weight's shape -> (numel,), row-major
    zeros_before = np.diff(positions, prepend=-1) - 1
    fillers, remainders = np.divmod(zeros_before, filler)
    counts = fillers + 1  # the fillers, then the weight's own symbol
    symbols = np.full(int(counts.sum()), filler, dtype=np.int64)
    symbols[np.cumsum(counts) - 1] = remainders
    return symbols


# -- streams ------------------------------------------------------------------------------------------------


def pack_fixed_width(symbols: np.ndarray, width: int) -> bytes:
    """Symbols as ``width``-bit unsigned integers, MSB first, packed without gaps."""
    shifts = np.arange(width - 1, -1, -1)
    bits = (symbols.astype(np.int64)[:, None] >> shifts) & 1  # (count, width)
    return np.packbits(bits.astype(np.uint8).reshape(-1)).tobytes()  # (count, width) -> (count * width,)


def encode_stream(symbols: np.ndarray, width: int, coding: Coding) -> tuple[dict[str, Any], bytes]:
    """Code a symbol stream; returns its header entry (without offset) and its bytes."""
    entry: dict[str, Any] = {"count": len(symbols), "width": width}
    if coding == "auto" and (len(symbols) == 0 or np.all(symbols == symbols[0])):
        return {**entry, "coding": "constant", "value": int(symbols[0]) if len(symbols) else 0}, b""
    candidates = {}
    if coding in ("auto", "raw"):
        candidates["raw"] = pack_fixed_width(symbols, width)
    if coding in ("auto", "huffman"):
        candidates["huffman"] = huffman_encode(symbols).to_bytes()  # code lengths up to the largest symbol
    chosen = min(candidates, key=lambda name: len(candidates[name]))
    return {**entry, "coding": chosen}, candidates[chosen]


# -- writing ------------------------------------------------------------------------------------------------


class _Payload:
    """Blobs appended one after another; each :meth:`add` returns its (offset, length)."""

    def __init__(self) -> None:
        self.blobs: list[bytes] = []
        self.size = 0

    def add(self, blob: bytes) -> dict[str, int]:
        self.blobs.append(blob)
        self.size += len(blob)
        return {"offset": self.size - len(blob), "length": len(blob)}


def _float_entry(tensor: torch.Tensor, float_format: str, payload: _Payload) -> dict[str, Any]:
    """A float tensor as float16 when asked for and exact, else float32; int64 tensors as they are."""
    tensor = tensor.detach().cpu()
    if not tensor.is_floating_point():
        return {"dtype": "int64", **payload.add(tensor.to(torch.int64).numpy().astype("<i8").tobytes())}
    values = tensor.to(torch.float32)
    half = values.to(torch.float16)
    if float_format == "float16" and torch.equal(half.to(torch.float32).view(torch.int32), values.view(torch.int32)):
        return {"dtype": "float16", **payload.add(half.numpy().astype("<f2").tobytes())}
    return {"dtype": "float32", **payload.add(values.numpy().astype("<f4").tobytes())}


def _plain_model(model: nn.Module, shared: SharedWeights | None) -> tuple[nn.Module, SharedWeights]:
    """``model`` without sharing parametrizations (on a copy), and the shared layers to store: those of the
    parametrizations when there are any (their codebooks are the current ones), else ``shared``."""
    if any(parametrize.is_parametrized(module) for module in model.modules()):
        model = copy.deepcopy(model)
        shared = detach_sharing(model)
    if any(hasattr(module, "weight_orig") for module in model.modules()):
        raise ValueError("the model is still pruned through torch.nn.utils.prune; finalize_pruning() it first")
    return model, shared if shared is not None else SharedWeights({})


def write_compressed(
    path: str | os.PathLike,
    model: nn.Module,
    shared: SharedWeights | None,
    *,
    model_spec: Mapping[str, Any],
    metadata: Mapping[str, Any] | None = None,
    position_bits: int = DEFAULT_POSITION_BITS,
    float_format: Literal["float32", "float16"] = "float16",
    coding: Coding = "auto",
) -> CompressionReport:
    """Write ``model`` (its ``state_dict``; shared layers coded as in the module docstring) to ``path``.

    ``model_spec`` is ``{"name": registered builder, "kwargs": {...}}`` (a checkpoint's ``model``); it must
    build a model with the same state keys and shapes. Every shared layer's weight must equal its
    ``codebook[index]`` exactly, so that the file is lossless; a model with sharing parametrizations attached
    is stored with their current codebooks. Returns the size report.
    """
    if not 1 <= position_bits <= 15:
        raise ValueError(f"position_bits must be in 1..15, got {position_bits}")
    model, shared = _plain_model(model, shared)
    state = model.state_dict()
    _check_spec(model_spec, state)
    weights = {f"{name}.weight": (name, layer) for name, layer in shared.layers.items()}
    unknown = sorted(set(weights) - set(state))
    if unknown:
        raise ValueError(f"shared layers {unknown} are not weights of the model")
    payload, entries = _Payload(), []
    for key, tensor in state.items():
        if key not in weights:
            entries.append({"name": key, "shape": list(tensor.shape), "encoding": "dense",
                            **_float_entry(tensor, float_format, payload)})  # fmt: skip
            continue
        name, layer = weights[key]
        if not torch.equal(tensor.cpu(), layer.weight().cpu()):
            raise ValueError(f"layer {name!r}: its weight is not its shared codebook[index] (fine-tuned apart?)")
        entries.append(_shared_entry(key, layer, position_bits, float_format, coding, payload))
    data = b"".join(payload.blobs)
    header = {
        "format": "yolov3-compressed",
        "model": {"name": model_spec["name"], "kwargs": dict(model_spec.get("kwargs", {}))},
        "metadata": dict(metadata or {}),
        "tensors": entries,
        "payload_bytes": len(data),
        "payload_crc32": zlib.crc32(data),
    }
    header_bytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    with atomic_output(path) as temporary, open(temporary, "wb") as file:
        file.write(PREAMBLE.pack(MAGIC, FORMAT_VERSION, len(header_bytes)))
        file.write(header_bytes)
        file.write(data)
    header_size = PREAMBLE.size + len(header_bytes)
    return report_from_header(header, header_size + len(data), header_size)


def _shared_entry(
    key: str, layer: SharedLayer, position_bits: int, float_format: str, coding: Coding, payload: _Payload
) -> dict[str, Any]:
    position_entry, position_data = encode_stream(encode_positions(layer.mask, position_bits), position_bits, coding)
    clusters = layer.index.long().cpu().numpy()
    cluster_entry, cluster_data = encode_stream(clusters, layer.index_bits, coding)
    return {
        "name": key,
        "shape": list(layer.mask.shape),
        "encoding": "shared",
        "k": layer.k,
        "position_bits": position_bits,
        "codebook": _float_entry(layer.codebook, float_format, payload),
        "positions": {**position_entry, **payload.add(position_data)},
        "clusters": {**cluster_entry, **payload.add(cluster_data)},
    }


def _check_spec(model_spec: Mapping[str, Any], state: Mapping[str, torch.Tensor]) -> None:
    """The spec must build a model with ``state``'s keys and shapes (built on the meta device: no memory)."""
    try:
        json.dumps(dict(model_spec))
        with torch.device("meta"):
            expected = create_model(model_spec["name"], **model_spec.get("kwargs", {})).state_dict()
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise ValueError(f"model_spec {dict(model_spec)} does not build a model: {error}") from error
    mismatched = [key for key in state if key not in expected or expected[key].shape != state[key].shape]
    if mismatched or len(expected) != len(state):
        raise ValueError(f"model_spec {model_spec['name']!r} builds another model (first mismatches {mismatched[:3]})")


# -- reading ------------------------------------------------------------------------------------------------


def load_compressed(path: str | os.PathLike) -> CompressedModel:
    """Read a compressed file (:func:`~yolov3.inference.compressed_file.read_compressed_file`): the model (CPU,
    eval mode) with exactly the tensors that were written, and the file's size report."""
    stored = read_compressed_file(path)
    file_bytes = Path(path).stat().st_size
    report = report_from_header(stored.header, file_bytes, file_bytes - stored.payload_bytes)
    return CompressedModel(**vars(stored), report=report)


# -- precision ----------------------------------------------------------------------------------------------

FLOAT16_SMALLEST_NORMAL = 2.0**-14
FLOAT16_LARGEST = 65504.0


def _fits_float16(tensor: torch.Tensor) -> bool:
    """Whether every non-zero value lies in float16's normal range (rounding costs < 0.05% relative)."""
    magnitudes = tensor.detach().abs()
    nonzero = magnitudes[magnitudes != 0]
    return bool(nonzero.numel() == 0 or (nonzero.min() >= FLOAT16_SMALLEST_NORMAL and nonzero.max() <= FLOAT16_LARGEST))


@torch.no_grad()
def round_to_float16(model: nn.Module, shared: SharedWeights | None = None) -> int:
    """Round, in place, every float parameter and buffer of ``model`` (and every codebook of ``shared``, then
    its layer's weight) that fits float16's normal range to float16 precision; returns how many tensors.

    Lossy (relative error below 2**-11): evaluate after it. It makes ``write_compressed(float_format="float16")``
    store those tensors in half the bytes while the file stays an exact copy of the model.
    """
    rounded = 0
    shared_weights = set()
    for name, layer in (shared.layers if shared is not None else {}).items():
        weight = model.get_submodule(name).weight
        if not isinstance(weight, torch.Tensor):
            raise TypeError(f"shared layer {name!r} has no weight tensor")
        if _fits_float16(layer.codebook):
            layer.codebook.copy_(layer.codebook.half().float())
            rounded += 1
        weight.copy_(layer.weight().to(weight.device))
        shared_weights.add(id(weight))
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.is_floating_point() and id(tensor) not in shared_weights and _fits_float16(tensor):
            tensor.copy_(tensor.half().to(tensor.dtype))
            rounded += 1
    return rounded
