"""Canonical Huffman coding of integer symbol streams, vectorised with numpy.

Deep Compression (Han, Mao and Dally, 2016) stores the cluster index and the relative position of every
non-zero weight, and codes both streams with Huffman codes since their symbols are far from uniform.

- Code lengths come from the symbol frequencies with ``heapq``; lengths longer than ``max_code_length``
  (16 by default) are avoided by flattening the frequencies and building again, so that decoding can use a
  table of ``2 ** max_length`` entries.
- The code is canonical: it is fully described by one length per symbol (0 for an absent symbol), which
  is all that is stored of the code table.
- Encoding writes the codes MSB first, one after another, with numpy: every code touches at most three
  bytes, which are summed with ``np.bincount``.
- The stream is cut into chunks of ``chunk_size`` symbols whose bit lengths are stored (16 bits each), so
  that decoding runs all chunks side by side in ``chunk_size`` numpy steps instead of one Python step per
  symbol; the stored lengths also check the decoded stream.

:class:`HuffmanStream` serialises to bytes (little-endian)::

    uint32 count | uint16 alphabet | uint16 chunk_size | uint8 lengths[alphabet]
    | uint16 chunk_bits[ceil(count / chunk_size)] | payload (ceil(sum(chunk_bits) / 8) bytes)
"""

from __future__ import annotations

import heapq
import struct
from dataclasses import dataclass

import numpy as np

DEFAULT_MAX_CODE_LENGTH = 16
DEFAULT_CHUNK_SIZE = 1024
_PREAMBLE = struct.Struct("<IHH")


class HuffmanError(ValueError):
    """A Huffman stream that cannot be decoded (corrupt or truncated data)."""


def code_lengths(frequencies: np.ndarray, max_code_length: int = DEFAULT_MAX_CODE_LENGTH) -> np.ndarray:
    """Huffman code length of every symbol (uint8), 0 for symbols of frequency 0.

    A lone symbol gets length 1. When the optimal code is longer than ``max_code_length``, the frequencies
    are halved (keeping every present symbol at 1 or more) until it is not: a near-optimal limited code.
    """
    frequencies = np.asarray(frequencies, dtype=np.int64)
    present = np.flatnonzero(frequencies > 0)
    if len(present) > 2**max_code_length:
        raise ValueError(f"{len(present)} symbols do not fit codes of at most {max_code_length} bits")
    lengths = np.zeros(len(frequencies), dtype=np.uint8)
    if len(present) == 1:
        lengths[present] = 1
        return lengths
    weights = frequencies[present]
    while True:
        depths = _tree_depths(weights.tolist())
        if max(depths, default=0) <= max_code_length:
            lengths[present] = depths
            return lengths
        weights = (weights + 1) // 2


def _tree_depths(weights: list[int]) -> list[int]:
    """Depth of every leaf in the Huffman tree of ``weights`` (ties broken by insertion order)."""
    depths = [0] * len(weights)
    heap = [(weight, order, [order]) for order, weight in enumerate(weights)]
    heapq.heapify(heap)
    order = len(weights)
    while len(heap) > 1:
        weight_a, _, leaves_a = heapq.heappop(heap)
        weight_b, _, leaves_b = heapq.heappop(heap)
        for leaf in leaves_a + leaves_b:
            depths[leaf] += 1
        heapq.heappush(heap, (weight_a + weight_b, order, leaves_a + leaves_b))
        order += 1
    return depths


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """The canonical code (uint32, right-aligned) of every symbol from its length; symbols ordered by
    (length, symbol) get consecutive codes. Raises :class:`HuffmanError` if the lengths over-subscribe."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.size and np.sum(np.ldexp(1.0, -lengths[lengths > 0])) > 1.0:
        raise HuffmanError("code lengths over-subscribe the code space (Kraft sum > 1)")
    codes = np.zeros(len(lengths), dtype=np.uint32)
    code, previous_length = 0, 0
    for symbol in sorted(np.flatnonzero(lengths).tolist(), key=lambda s: (lengths[s], s)):
        code <<= int(lengths[symbol]) - previous_length
        codes[symbol] = code
        code, previous_length = code + 1, int(lengths[symbol])
    return codes


@dataclass(frozen=True)
class HuffmanStream:
    """A Huffman-coded stream: the code (a length per symbol), the chunk bit lengths and the bits."""

    count: int
    lengths: np.ndarray  # (alphabet,) uint8
    chunk_size: int
    chunk_bits: np.ndarray  # (ceil(count / chunk_size),) uint16
    payload: bytes

    @property
    def payload_bits(self) -> int:
        """Bits of coded symbols (the payload without its padding to whole bytes)."""
        return int(self.chunk_bits.astype(np.int64).sum())

    @property
    def table_bits(self) -> int:
        """Bits of everything but the payload: preamble, code lengths and chunk lengths."""
        return 8 * (_PREAMBLE.size + len(self.lengths) + 2 * len(self.chunk_bits))

    def to_bytes(self) -> bytes:
        preamble = _PREAMBLE.pack(self.count, len(self.lengths), self.chunk_size)
        return (
            preamble + self.lengths.astype(np.uint8).tobytes() + self.chunk_bits.astype("<u2").tobytes() + self.payload
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> HuffmanStream:
        """Parse :meth:`to_bytes` output; raises :class:`HuffmanError` when sizes disagree."""
        if len(data) < _PREAMBLE.size:
            raise HuffmanError(f"Huffman stream of {len(data)} bytes is shorter than its preamble")
        count, alphabet, chunk_size = _PREAMBLE.unpack_from(data)
        if chunk_size == 0 or (count and alphabet == 0):
            raise HuffmanError(f"invalid Huffman preamble (count {count}, alphabet {alphabet}, chunk {chunk_size})")
        chunks = -(-count // chunk_size)
        start = _PREAMBLE.size
        if len(data) < start + alphabet + 2 * chunks:
            raise HuffmanError(f"truncated Huffman stream: {len(data)} bytes cannot hold its tables")
        lengths = np.frombuffer(data, np.uint8, alphabet, start).copy()
        chunk_bits = np.frombuffer(data, "<u2", chunks, start + alphabet).astype(np.uint16)
        payload = data[start + alphabet + 2 * chunks :]
        expected = -(-int(chunk_bits.astype(np.int64).sum()) // 8)
        if len(payload) != expected:
            raise HuffmanError(f"Huffman payload has {len(payload)} bytes, its chunk lengths say {expected}")
        if lengths.max(initial=0) > DEFAULT_MAX_CODE_LENGTH or chunk_size * int(lengths.max(initial=0)) > 0xFFFF:
            raise HuffmanError(f"Huffman code lengths up to {lengths.max()} bits are not supported")
        return cls(count, lengths, chunk_size, chunk_bits, payload)


def huffman_encode(
    symbols: np.ndarray,
    alphabet_size: int | None = None,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    max_code_length: int = DEFAULT_MAX_CODE_LENGTH,
) -> HuffmanStream:
    """Huffman-code a 1-D stream of non-negative integers below ``alphabet_size`` (default: max + 1)."""
    symbols = np.asarray(symbols).reshape(-1).astype(np.int64)  # any shape -> (count,)
    if symbols.size and symbols.min() < 0:
        raise ValueError("Huffman symbols must be non-negative integers")
    alphabet_size = int(symbols.max(initial=-1)) + 1 if alphabet_size is None else alphabet_size
    if symbols.size and symbols.max() >= alphabet_size:
        raise ValueError(f"symbol {symbols.max()} is outside the alphabet of {alphabet_size}")
    if not 0 < alphabet_size <= 0xFFFF and symbols.size:
        raise ValueError(f"alphabet of {alphabet_size} symbols is not supported (at most 65535)")
    if chunk_size * max_code_length > 0xFFFF or max_code_length > DEFAULT_MAX_CODE_LENGTH:
        raise ValueError("chunk_size * max_code_length must fit 16 bits, and max_code_length be at most 16")
    lengths = code_lengths(np.bincount(symbols, minlength=alphabet_size), max_code_length)
    codes = canonical_codes(lengths)
    symbol_lengths = lengths[symbols].astype(np.int64)  # (count,)
    ends = np.cumsum(symbol_lengths)
    starts = ends - symbol_lengths
    chunk_ends = ends[np.minimum(np.arange(chunk_size, len(symbols) + chunk_size, chunk_size), len(symbols)) - 1]
    chunk_bits = np.diff(chunk_ends, prepend=0).astype(np.uint16)
    total_bytes = -(-int(ends[-1]) // 8) if len(symbols) else 0
    # Each code (<= 16 bits) starting at bit `start % 8` of byte `start // 8` spans at most 3 bytes: place
    # it in a 24-bit window and add the window's bytes into the output (codes never overlap, so add = or).
    windows = codes[symbols].astype(np.int64) << (24 - (starts % 8) - symbol_lengths)
    first_byte = starts // 8
    payload = np.zeros(total_bytes + 2, dtype=np.float64)
    for shift, offset in ((16, 0), (8, 1), (0, 2)):
        part = (windows >> shift) & 0xFF
        payload += np.bincount(first_byte + offset, weights=part, minlength=total_bytes + 2)
    data = payload[:total_bytes].astype(np.uint8).tobytes()
    return HuffmanStream(len(symbols), lengths, chunk_size, chunk_bits, data)


def huffman_decode(stream: HuffmanStream) -> np.ndarray:
    """Decode a :class:`HuffmanStream` back to its symbols (int64); raises :class:`HuffmanError` when the
    payload does not decode to exactly the stored chunk lengths."""
    count, chunk_size, lengths = stream.count, stream.chunk_size, stream.lengths.astype(np.int64)
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    max_length = int(lengths.max(initial=0))
    if max_length == 0:
        raise HuffmanError("Huffman stream has symbols but no code")
    codes = canonical_codes(lengths)
    # Decoding table: every max_length-bit window starting with a symbol's code maps to that symbol.
    table_symbol = np.zeros(2**max_length, dtype=np.int64)
    table_length = np.zeros(2**max_length, dtype=np.int64)
    for symbol in np.flatnonzero(lengths).tolist():
        shift = max_length - int(lengths[symbol])
        first = int(codes[symbol]) << shift
        table_symbol[first : first + (1 << shift)] = symbol
        table_length[first : first + (1 << shift)] = lengths[symbol]
    payload = np.frombuffer(stream.payload, dtype=np.uint8).astype(np.uint32)
    padded = np.concatenate([payload, np.zeros(3, dtype=np.uint32)])
    words = (padded[:-2] << 16) | (padded[1:-1] << 8) | padded[2:]  # 24 bits starting at every byte
    chunks = len(stream.chunk_bits)
    positions = np.concatenate([[0], np.cumsum(stream.chunk_bits.astype(np.int64))[:-1]])  # (chunks,)
    decoded = np.zeros((chunk_size, chunks), dtype=np.int64)  # row t: the t-th symbol of every chunk
    decoded_lengths = np.zeros((chunk_size, chunks), dtype=np.int64)
    last_word, mask = len(words) - 1, (1 << max_length) - 1
    for step in range(min(chunk_size, count)):
        byte_index = np.minimum(positions >> 3, last_word)
        window = (words[byte_index] >> (24 - max_length - (positions & 7)).astype(np.uint32)) & mask
        decoded[step] = table_symbol[window]
        decoded_lengths[step] = table_length[window]
        positions = positions + decoded_lengths[step]
    symbols = decoded.T.reshape(-1)[:count]  # (chunk_size, chunks) -> (chunks * chunk_size,), cut to count
    used = decoded_lengths.T.reshape(-1)[:count]  # the same for the code lengths: (count,)
    if np.any(used == 0):
        raise HuffmanError("Huffman payload holds a bit pattern that is no code of the stored table")
    padded_used = np.zeros(chunks * chunk_size, dtype=np.int64)
    padded_used[:count] = used
    per_chunk = padded_used.reshape(chunks, chunk_size).sum(axis=1)  # (chunks * chunk_size,) -> (chunks, chunk_size)
    if not np.array_equal(per_chunk, stream.chunk_bits.astype(np.int64)):
        raise HuffmanError("Huffman payload does not decode to its stored chunk lengths (corrupt data)")
    return symbols
