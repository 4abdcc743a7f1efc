"""Huffman coding and the compressed model file: lossless round trips, counted bits, refused bad files."""

from __future__ import annotations

import heapq
import json
import math
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from yolov3.compression.masks import finalize_pruning, prunable_layers, prune_to_sparsity
from yolov3.compression.sharing import SharedWeights, share_weights
from yolov3.compression.storage import encode_positions, load_compressed, round_to_float16, write_compressed
from yolov3.huffman import (
    HuffmanError,
    HuffmanStream,
    canonical_codes,
    code_lengths,
    huffman_decode,
    huffman_encode,
)
from yolov3.inference.compressed_file import MAGIC, CompressedFileError, decode_positions, read_compressed
from yolov3.models import create_model

RANDOM = np.random.default_rng(0)
STREAMS = {
    "uniform 16": RANDOM.integers(0, 16, 20_000),
    "uniform 256": RANDOM.integers(0, 256, 5_000),
    "geometric (skewed)": np.minimum(RANDOM.geometric(0.15, 30_000) - 1, 15),
    "zipf (skewed)": np.minimum(RANDOM.zipf(1.5, 10_000) - 1, 255),
    "two symbols": np.array([0, 7, 7, 7, 0, 7] * 100),
    "one symbol": np.full(3000, 5),
    "one value": np.array([3]),
    "empty": np.zeros(0, dtype=np.int64),
}


def optimal_cost(frequencies: list[int]) -> int:
    """Total bits of an optimal prefix code: the sum of all merged weights (independent of the module)."""
    heap = [f for f in frequencies if f > 0]
    heapq.heapify(heap)
    if len(heap) == 1:
        return heap[0]
    total = 0
    while len(heap) > 1:
        merged = heapq.heappop(heap) + heapq.heappop(heap)
        total += merged
        heapq.heappush(heap, merged)
    return total


@pytest.mark.parametrize("name", list(STREAMS))
def test_huffman_round_trip_is_lossless_and_optimal(name: str) -> None:
    symbols = STREAMS[name]
    stream = huffman_encode(symbols, chunk_size=256)
    restored = huffman_decode(HuffmanStream.from_bytes(stream.to_bytes()))
    assert np.array_equal(restored, symbols)
    frequencies = np.bincount(symbols, minlength=1).tolist() if len(symbols) else []
    assert stream.payload_bits == optimal_cost(frequencies)
    if len(set(symbols.tolist())) > 1:
        assert sum(2.0 ** -int(length) for length in stream.lengths if length) == 1.0  # a complete code
        probabilities = np.bincount(symbols) / len(symbols)
        entropy = -sum(p * math.log2(p) for p in probabilities if p > 0)
        assert entropy * len(symbols) <= stream.payload_bits < (entropy + 1) * len(symbols)


def test_canonical_code_is_prefix_free_and_limited_in_length() -> None:
    fibonacci = [1, 1]
    while len(fibonacci) < 30:
        fibonacci.append(fibonacci[-1] + fibonacci[-2])
    symbols = np.repeat(np.arange(30), fibonacci)  # an optimal code would need 29-bit codes
    lengths = code_lengths(np.array(fibonacci))
    assert lengths.max() <= 16
    codes = canonical_codes(lengths)
    words = [format(int(code), f"0{length}b") for code, length in zip(codes, lengths, strict=True)]
    assert not any(a != b and b.startswith(a) for a in words for b in words)
    assert np.array_equal(huffman_decode(huffman_encode(symbols)), symbols)
    assert code_lengths(np.array([4, 0, 2, 1, 1])).tolist() == [1, 0, 2, 3, 3]  # hand-computed


def test_huffman_rejects_corrupt_streams() -> None:
    stream = huffman_encode(STREAMS["geometric (skewed)"], chunk_size=256)
    with pytest.raises(HuffmanError, match="payload has"):
        HuffmanStream.from_bytes(stream.to_bytes()[:-5])
    chunk_bits = stream.chunk_bits.copy()
    first = int(np.flatnonzero(chunk_bits != chunk_bits[0])[0])
    chunk_bits[[0, first]] = chunk_bits[[first, 0]]  # same total, wrong chunk boundaries
    swapped = HuffmanStream(stream.count, stream.lengths, stream.chunk_size, chunk_bits, stream.payload)
    with pytest.raises(HuffmanError, match="chunk lengths"):
        huffman_decode(swapped)
    oversubscribed = HuffmanStream(stream.count, np.ones(4, dtype=np.uint8), 256, stream.chunk_bits, stream.payload)
    with pytest.raises(HuffmanError, match="over-subscribe"):
        huffman_decode(oversubscribed)


def test_relative_positions_with_fillers_hand_computed() -> None:
    mask = torch.zeros(12, dtype=torch.bool)
    mask[[1, 2, 9, 11]] = True
    # 2-bit indices: the filler is 3 (three zeros, no weight); zeros before each weight: 1, 0, 6 = 3 + 3 + 0, 1.
    symbols = encode_positions(mask, 2)
    assert symbols.tolist() == [1, 0, 3, 3, 0, 1]
    assert decode_positions(symbols, 2).tolist() == [1, 2, 9, 11]


def compressed_model(name: str, seed: int = 0) -> tuple[nn.Module, SharedWeights]:
    """A pruned (80 %), shared (k = 16) model with batch-norm statistics that are not the defaults."""
    torch.manual_seed(seed)
    model = create_model(name, num_classes=3).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_()
                module.running_var.uniform_(0.5, 2.0)
                module.bias.normal_()
    prune_to_sparsity(model, 0.8, "global", prunable_layers(model))
    finalize_pruning(model)
    return model, share_weights(model, bits=4)


@pytest.mark.parametrize(
    ("name", "float_format", "position_bits"),
    [("yolov3_tiny_test", "float16", 4), ("yolov3_tiny_test", "float32", 8), ("yolov3_test", "float16", 3)],
)
def test_round_trip_gives_bit_identical_outputs(
    tmp_path: Path, name: str, float_format: str, position_bits: int
) -> None:
    model, shared = compressed_model(name)
    if float_format == "float16":
        assert round_to_float16(model, shared) > 0
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(images)
    path = tmp_path / "model.yolov3c"
    spec = {"name": name, "kwargs": {"num_classes": 3}}
    report = write_compressed(path, model, shared, model_spec=spec, metadata={"class_names": ["a", "b", "c"]},
                              position_bits=position_bits, float_format=float_format)  # fmt: skip
    assert path.read_bytes()[:8] == MAGIC and path.stat().st_size == report.file_bytes
    stored = load_compressed(path)
    with torch.no_grad():
        outputs = stored.model(images)
    assert all(torch.equal(a, b) for a, b in zip(outputs, expected, strict=True))
    for key, value in model.state_dict().items():
        assert torch.equal(stored.model.state_dict()[key], value), key
    assert stored.model_spec == spec and stored.metadata == {"class_names": ["a", "b", "c"]}
    assert set(stored.shared.layers) == set(shared.layers)
    assert all(len(torch.unique(layer.codebook[layer.index.long()])) <= 16 for layer in stored.shared.layers.values())
    if float_format == "float16":
        assert report.dense_float16 > report.dense_float32
    else:
        assert report.dense_float16 == 0


def test_formula_bits_match_the_bits_written(tmp_path: Path) -> None:
    model, shared = compressed_model("yolov3_tiny_test")
    path = tmp_path / "raw.yolov3c"
    spec = {"name": "yolov3_tiny_test", "kwargs": {"num_classes": 3}}
    report = write_compressed(path, model, shared, model_spec=spec, float_format="float32", coding="raw")
    # Parse the file independently: magic, version, header length, JSON header.
    data = path.read_bytes()
    magic, version, header_length = struct.unpack_from("<8sII", data)
    assert (magic, version) == (MAGIC, 1)
    header = json.loads(data[16 : 16 + header_length])
    entries = {entry["name"].removesuffix(".weight"): entry for entry in header["tensors"]}
    layers = {layer.name: layer for layer in report.layers}
    assert set(layers) == set(shared.layers)
    for name, layer in shared.layers.items():
        entry, n, k = entries[name], layer.num_nonzero, layer.k
        assert entry["clusters"]["coding"] == "raw" and entry["codebook"]["dtype"] == "float32"
        written = 8 * (entry["clusters"]["length"] + entry["codebook"]["length"])  # bytes actually written
        formula = n * math.log2(k) + k * 32  # the denominator of r = n b / (n log2 k + k b)
        assert 0 <= written - formula < 8, name  # equal up to the padding of the last byte
        assert layers[name].sharing_rate == pytest.approx(n * 32 / formula)
        assert layers[name].raw_index_bits == n * 4 + entry["positions"]["count"] * 4
    assert report.file_bytes == report.header_bytes + report.dense_bytes + report.shared_bytes
    darknet = tmp_path / "model.weights"
    model.save_darknet_weights(darknet)
    assert report.darknet_bytes == darknet.stat().st_size  # 20 + 4 * floats


def test_bad_files_are_refused_with_the_file_name(tmp_path: Path) -> None:
    model, shared = compressed_model("yolov3_tiny_test")
    good = tmp_path / "good.yolov3c"
    write_compressed(good, model, shared, model_spec={"name": "yolov3_tiny_test", "kwargs": {"num_classes": 3}})
    data = good.read_bytes()
    cases = {
        "garbage.yolov3c": (RANDOM.integers(0, 256, 4000).astype(np.uint8).tobytes(), "not a yolov3 compressed"),
        "empty.yolov3c": (b"", "not a yolov3 compressed"),
        "short.yolov3c": (data[:100], "truncated"),
        "truncated.yolov3c": (data[:-10], "truncated"),
        "padded.yolov3c": (data + b"\0", "truncated or padded"),
        "flipped.yolov3c": (data[:-50] + bytes([data[-50] ^ 1]) + data[-49:], "CRC32"),
        "header.yolov3c": (data[:20] + b"\xff" + data[21:], "corrupt header"),
    }
    for file_name, (content, message) in cases.items():
        path = tmp_path / file_name
        path.write_bytes(content)
        with pytest.raises(CompressedFileError, match=re.escape(str(path)) + ".*" + message):
            read_compressed(path)
    with pytest.raises(CompressedFileError, match="no such compressed model file"):
        read_compressed(tmp_path / "missing.yolov3c")


def test_writer_refuses_what_it_could_not_store_losslessly(tmp_path: Path) -> None:
    model, shared = compressed_model("yolov3_tiny_test")
    spec = {"name": "yolov3_tiny_test", "kwargs": {"num_classes": 3}}
    other = {"name": "yolov3_tiny_test", "kwargs": {"num_classes": 5}}
    with pytest.raises(ValueError, match="builds another model"):
        write_compressed(tmp_path / "a.yolov3c", model, shared, model_spec=other)
    name = next(iter(shared.layers))
    with torch.no_grad():
        model.get_submodule(name).weight.mul_(1.5)  # changed apart from its codebook
    with pytest.raises(ValueError, match="not its shared codebook"):
        write_compressed(tmp_path / "b.yolov3c", model, shared, model_spec=spec)
    assert not (tmp_path / "b.yolov3c").exists()
