"""Size report of a compressed model file: per shared layer and in total, from the file's header alone.

Per layer: ``n`` parameters, sparsity, ``k`` clusters, the raw width of a cluster index (``log2 k``) and of a
relative position, the fillers the position width cost, Deep Compression's weight-sharing compression rate

    r = n_nz * b / (n_nz * log2(k) + k * b)          (b = 32, the bits of an fp32 weight)

over the layer's ``n_nz`` non-zero (shared) weights, the index bits per non-zero weight before Huffman coding
(fixed width) and as written, and the layer's bytes on disk. In total: the file's size against the fp32
Darknet ``.weights`` of the same model (``20 + 4 * floats`` bytes).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ORIGINAL_BITS = 32
DARKNET_HEADER_BYTES = 20


@dataclass(frozen=True)
class LayerReport:
    """Sizes of one shared layer; ``*_bits`` count bits, the coded ones as written (whole bytes)."""

    name: str
    parameters: int
    nonzero: int
    k: int
    cluster_bits: int  # raw width of one cluster index
    position_bits: int  # width of one relative position
    fillers: int  # filler symbols in the position stream
    raw_index_bits: int  # both index streams at fixed width: nonzero * cluster_bits + symbols * position_bits
    coded_index_bits: int  # both index streams as written (Huffman, raw or constant), tables included
    codebook_bits: int  # as written (k float16 or float32)

    @property
    def sparsity(self) -> float:
        return 1.0 - self.nonzero / self.parameters if self.parameters else 0.0

    @property
    def sharing_rate(self) -> float:
        """The paper's r = n b / (n log2 k + k b) with n the non-zero weights and b = 32."""
        n = self.nonzero
        return n * ORIGINAL_BITS / (n * math.log2(self.k) + self.k * ORIGINAL_BITS) if n else 0.0

    @property
    def huffman_gain(self) -> float:
        """Index bits at fixed width over index bits as written."""
        return self.raw_index_bits / self.coded_index_bits if self.coded_index_bits else 1.0

    @property
    def stored_bytes(self) -> int:
        return (self.coded_index_bits + self.codebook_bits) // 8

    @property
    def ratio(self) -> float:
        """The layer's fp32 size over its stored size."""
        return 4 * self.parameters / self.stored_bytes if self.stored_bytes else math.inf


@dataclass(frozen=True)
class CompressionReport:
    """Sizes of a compressed file: its shared layers, its dense tensors, and the totals."""

    layers: tuple[LayerReport, ...]
    file_bytes: int
    header_bytes: int  # magic, version, length and the JSON header
    dense_bytes: int  # biases, batch norm, unshared layers
    dense_float16: int  # how many dense float tensors were stored as float16
    dense_float32: int
    floats: int  # float values of the model (what a Darknet .weights file holds)

    @property
    def darknet_bytes(self) -> int:
        """Size of the fp32 Darknet ``.weights`` file of the same model: 20 + 4 * floats."""
        return DARKNET_HEADER_BYTES + 4 * self.floats

    @property
    def ratio(self) -> float:
        """How many times smaller than the fp32 ``.weights`` file the compressed file is."""
        return self.darknet_bytes / self.file_bytes

    @property
    def shared_bytes(self) -> int:
        return sum(layer.stored_bytes for layer in self.layers)

    def format_table(self, largest: int | None = None) -> str:
        """A markdown table, one row per shared layer (only the ``largest`` ones by parameters, when given),
        a total row over all of them, then the file's breakdown."""
        lines = [
            "| layer | params n | sparsity | k | idx bits | pos bits | fillers | r (paper) "
            "| bits/nz raw | bits/nz coded | Huffman gain | bytes | vs fp32 |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        shown = self.layers if largest is None else sorted(self.layers, key=lambda layer: -layer.parameters)[:largest]
        lines += [_row(layer.name, layer) for layer in shown]
        if self.layers:
            lines.append(_row(f"**total of {len(self.layers)} shared layers**", self.shared_total()))
        return "\n".join(lines) + "\n\n" + self.summary()

    def shared_total(self) -> LayerReport:
        """All shared layers as one (k and widths: the largest)."""
        layers = self.layers
        return LayerReport(
            "total",
            sum(layer.parameters for layer in layers),
            sum(layer.nonzero for layer in layers),
            max(layer.k for layer in layers),
            max(layer.cluster_bits for layer in layers),
            max(layer.position_bits for layer in layers),
            sum(layer.fillers for layer in layers),
            sum(layer.raw_index_bits for layer in layers),
            sum(layer.coded_index_bits for layer in layers),
            sum(layer.codebook_bits for layer in layers),
        )

    def summary(self) -> str:
        """The file's size breakdown and its ratio against the fp32 ``.weights`` file."""
        return (
            f"file {self.file_bytes:,} bytes = shared layers {self.shared_bytes:,} + dense tensors "
            f"{self.dense_bytes:,} ({self.dense_float16} float16, {self.dense_float32} float32) + header "
            f"{self.header_bytes:,}; fp32 Darknet .weights {self.darknet_bytes:,} bytes: {self.ratio:.1f}x smaller"
        )


def _row(name: str, layer: LayerReport) -> str:
    nonzero = max(1, layer.nonzero)
    return (
        f"| {name} | {layer.parameters:,} | {layer.sparsity:.1%} | {layer.k} | {layer.cluster_bits} "
        f"| {layer.position_bits} | {layer.fillers:,} | {layer.sharing_rate:.2f} "
        f"| {layer.raw_index_bits / nonzero:.2f} | {layer.coded_index_bits / nonzero:.2f} "
        f"| {layer.huffman_gain:.2f} | {layer.stored_bytes:,} | {layer.ratio:.1f}x |"
    )


def report_from_header(header: Mapping[str, Any], file_bytes: int, header_bytes: int) -> CompressionReport:
    """The report of a file from its header (``yolov3.compression.storage``), without decoding anything."""
    layers, dense_bytes, floats, dtypes = [], 0, 0, {"float16": 0, "float32": 0}
    for entry in header["tensors"]:
        numel = math.prod(entry["shape"])
        if entry["encoding"] == "dense":
            dense_bytes += entry["length"]
            if entry["dtype"] in dtypes:
                dtypes[entry["dtype"]] += 1
                floats += numel
            continue
        floats += numel
        positions, clusters = entry["positions"], entry["clusters"]
        layers.append(
            LayerReport(
                name=entry["name"].removesuffix(".weight"),
                parameters=numel,
                nonzero=clusters["count"],
                k=entry["k"],
                cluster_bits=clusters["width"],
                position_bits=positions["width"],
                fillers=positions["count"] - clusters["count"],
                raw_index_bits=clusters["count"] * clusters["width"] + positions["count"] * positions["width"],
                coded_index_bits=8 * (clusters["length"] + positions["length"]),
                codebook_bits=8 * entry["codebook"]["length"],
            )
        )
    return CompressionReport(
        tuple(layers), file_bytes, header_bytes, dense_bytes, dtypes["float16"], dtypes["float32"], floats
    )
