"""Test helpers: random Darknet ``.weights`` written straight from the cfg, independently of our writer."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np

from yolov3.darknet.cfg import (
    BatchnormSection,
    ConnectedSection,
    ConvLstmSection,
    ConvolutionalSection,
    CrnnSection,
    DarknetCfg,
    DeconvolutionalSection,
    GruSection,
    ImplicitSection,
    LocalSection,
    LstmSection,
    RnnSection,
    ShortcutSection,
)
from yolov3.darknet.cfg_convolutional import NO_SHARE
from yolov3.darknet.graph import LayerNode, build_graph


def conv_floats(rng: np.random.Generator, filters: int, fan_in: int, batch_normalize: int) -> list[np.ndarray]:
    """One conv as load_convolutional_weights reads it: biases (beta), [scales, rolling mean, variance], weights."""
    if batch_normalize:
        parts = [
            rng.normal(0.0, 0.1, filters),  # beta
            rng.uniform(0.4, 0.9, filters),  # gamma
            rng.normal(0.0, 0.1, filters),  # running mean
            rng.uniform(0.5, 1.5, filters),  # running variance
        ]
    else:
        parts = [rng.normal(0.0, 0.1, filters)]  # bias
    parts.append(rng.normal(0.0, fan_in**-0.5, filters * fan_in))
    return parts


def connected_floats(
    rng: np.random.Generator, inputs: int, outputs: int, batch_normalize: int, offset_scale: float = 0.1
) -> list[np.ndarray]:
    """One [connected] as load_connected_weights reads it: biases, weights (outputs x inputs), [scales, rolling
    mean, rolling variance]; biases and means have standard deviation ``offset_scale``."""
    parts = [rng.normal(0.0, offset_scale, outputs), rng.normal(0.0, inputs**-0.5, outputs * inputs)]
    if batch_normalize:
        parts += [rng.uniform(0.4, 0.9, outputs), rng.normal(0, offset_scale, outputs), rng.uniform(0.5, 1.5, outputs)]
    return parts


def recurrent_inner_shapes(section: RnnSection | GruSection | LstmSection, inputs: int) -> list[tuple[int, int]]:
    """(inputs, outputs) of each inner [connected] layer, in the order parser.c's load_weights_upto reads them."""
    if isinstance(section, RnnSection):  # input, self, output
        hidden = section.hidden
        return [(inputs, hidden), (hidden, hidden), (hidden, section.output)]
    outputs = section.output
    if isinstance(section, GruSection):  # input_z, input_r, input_h, state_z, state_r, state_h
        return [(inputs, outputs)] * 3 + [(outputs, outputs)] * 3
    return [(outputs, outputs)] * 4 + [(inputs, outputs)] * 4  # wf, wi, wg, wo, uf, ui, ug, uo


def layer_floats(rng: np.random.Generator, node: LayerNode) -> list[np.ndarray]:
    """Random floats for one layer in the order parser.c's load_weights_upto reads them ([] when it reads none)."""
    section = node.section
    if isinstance(section, ConvolutionalSection):
        if section.share_index != NO_SHARE:  # a sharing layer reads nothing (l.share_layer != NULL)
            return []
        fan_in = node.in_channels // section.effective_groups * section.size**2
        return conv_floats(rng, section.filters, fan_in, section.batch_normalize)
    if isinstance(section, CrnnSection):  # its input, self and output convolutions, in that order
        parts = []
        for inputs, outputs in ((node.in_channels, section.hidden), (section.hidden, section.hidden)):
            parts += conv_floats(rng, outputs, inputs // section.groups * section.size**2, section.batch_normalize)
        fan_in = section.hidden // section.groups * section.size**2
        return parts + conv_floats(rng, section.output, fan_in, section.batch_normalize)
    if isinstance(section, ConvLstmSection):  # vf, vi, vo (peephole), wf, wi, wg, wo, uf, ui, ug, uo
        parts = []
        for inputs in (section.output,) * (7 if section.peephole else 4) + (node.in_channels,) * 4:
            fan_in = inputs // section.groups * section.size**2
            parts += conv_floats(rng, section.output, fan_in, section.batch_normalize)
        return parts
    if isinstance(section, ImplicitSection):
        return [rng.normal(0.0, 1.0, section.filters * section.atoms)]
    if isinstance(section, BatchnormSection):  # biases, scales, rolling mean, rolling variance
        channels = node.in_channels
        return [
            rng.normal(0, 0.1, channels),
            rng.uniform(0.4, 0.9, channels),
            rng.normal(0, 0.1, channels),
            rng.uniform(0.5, 1.5, channels),
        ]
    if isinstance(section, ConnectedSection):
        return connected_floats(rng, math.prod(node.input_shape), section.output, section.batch_normalize)
    if isinstance(section, (RnnSection, GruSection, LstmSection)):  # inner [connected] layers, offsets that show
        shapes = recurrent_inner_shapes(section, math.prod(node.input_shape))
        return [part for shape in shapes for part in connected_floats(rng, *shape, section.batch_normalize, 0.5)]
    if isinstance(section, ShortcutSection) and section.weights_type != "none":
        per_input = node.in_channels if section.weights_type == "per_channel" else 1
        return [rng.normal(0.5, 0.5, (len(section.from_layer) + 1) * per_input)]
    if isinstance(section, LocalSection):  # biases (one per output value), weights (locations, filters, C*k*k)
        fan_in, (filters, rows, columns) = node.in_channels * section.size**2, node.output_shape
        weights = rng.normal(0.0, fan_in**-0.5, rows * columns * filters * fan_in)
        return [rng.normal(0.0, 0.1, filters * rows * columns), weights]
    if isinstance(section, DeconvolutionalSection):  # as a conv: weights (C_in, filters, size, size)
        return conv_floats(rng, section.filters, node.in_channels * section.size**2, section.batch_normalize)
    return []


def write_random_weights(cfg: DarknetCfg, path: Path, seed: int = 0, seen: int = 12345) -> int:
    """Write a v0.2.0 ``.weights`` file with random values for every layer of ``cfg`` that has weights (convs,
    [crnn], [conv_lstm], [implicit], [batchnorm], [connected], weighted [shortcut], [rnn], [gru], [lstm]); returns
    the float count.

    Conv weights have variance 1/fan_in and BN scales below 1, so activations stay O(1) through 100 layers;
    running variances are in [0.5, 1.5] so no normalization divides by a tiny number.
    """
    rng = np.random.default_rng(seed)
    chunks = [struct.pack("<3iq", 0, 2, 0, seen)]
    count = 0
    for node in build_graph(cfg):
        parts = layer_floats(rng, node)
        if not parts:
            continue
        data = np.concatenate(parts).astype("<f4")
        count += data.size
        chunks.append(data.tobytes())
    path.write_bytes(b"".join(chunks))
    return count


def relative_error(ours: np.ndarray, reference: np.ndarray) -> float:
    """max |ours - reference| / max |reference|."""
    return float(np.abs(ours - reference).max() / np.abs(reference).max())
