"""Test helpers: random Darknet ``.weights`` written straight from the cfg, independently of our writer."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from yolov3.darknet.cfg import ConvolutionalSection, DarknetCfg
from yolov3.darknet.graph import build_graph


def write_random_weights(cfg: DarknetCfg, path: Path, seed: int = 0, seen: int = 12345) -> int:
    """Write a v0.2.0 ``.weights`` file with random values for every conv of ``cfg``; returns the float count.

    Conv weights have variance 1/fan_in and BN scales below 1, so activations stay O(1) through 100 layers;
    running variances are in [0.5, 1.5] so no normalization divides by a tiny number.
    """
    rng = np.random.default_rng(seed)
    chunks = [struct.pack("<3iq", 0, 2, 0, seen)]
    count = 0
    for node in build_graph(cfg):
        section = node.section
        if not isinstance(section, ConvolutionalSection):
            continue
        filters, fan_in = section.filters, node.in_channels // section.effective_groups * section.size**2
        if section.batch_normalize:
            parts = [
                rng.normal(0.0, 0.1, filters),  # beta
                rng.uniform(0.4, 0.9, filters),  # gamma
                rng.normal(0.0, 0.1, filters),  # running mean
                rng.uniform(0.5, 1.5, filters),  # running variance
            ]
        else:
            parts = [rng.normal(0.0, 0.1, filters)]  # bias
        parts.append(rng.normal(0.0, fan_in**-0.5, filters * fan_in))
        data = np.concatenate(parts).astype("<f4")
        count += data.size
        chunks.append(data.tobytes())
    path.write_bytes(b"".join(chunks))
    return count


def relative_error(ours: np.ndarray, reference: np.ndarray) -> float:
    """max |ours - reference| / max |reference|."""
    return float(np.abs(ours - reference).max() / np.abs(reference).max())
