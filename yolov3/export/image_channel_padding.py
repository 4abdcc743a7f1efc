"""Int8 graphs: the convolution that reads the image gets a fourth input channel of zeros.

onnxruntime's x86 integer convolution (MLAS, uint8 activations x int8 weights) is fastest when the input
channels come in groups of four, as AVX512-VNNI's ``vpdpbusd`` multiplies and adds four byte pairs at a time.
An RGB image has three. Measured on this project's 2-core Xeon (AVX512-VNNI, onnxruntime 1.32, 1 thread, an
idle machine), the int8 stem of yolov3-tiny at 416x416 (3 -> 16 channels) takes 6.2 ms; with its input padded
to 4 channels 3.9 ms, to 8 channels 4.2 ms, to 16 channels 4.8 ms. The fp32 convolution of the same layer takes
2.4-2.8 ms: the padding halves the int8 stem's handicap; it does not remove it.

:func:`pad_image_channels` rewrites a QDQ graph: the float image gets a zero channel (``Pad``) before its
``QuantizeLinear``, and each convolution that reads it gets a zero input channel in its int8 weights. Every
product the extra channel adds is ``(q - zero point) x 0 = 0``, so the outputs are bit-identical to the
unpadded graph's; the weights are per output channel (axis 0), so their scales do not change.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from yolov3.atomic import atomic_output

logger = logging.getLogger(__name__)

CHANNEL_GROUP = 4  # the input channels an integer convolution reads at a time (VNNI: four byte pairs)


def _consumers(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return consumers


def _padded_weight(
    conv: onnx.NodeProto,
    producers: dict[str, onnx.NodeProto],
    consumers: dict[str, list[onnx.NodeProto]],
    initializers: dict[str, onnx.TensorProto],
    channels: int,
) -> tuple[onnx.TensorProto, np.ndarray] | None:
    """The int8 weight initializer of ``conv`` and its values padded to ``channels`` inputs, or ``None`` when
    ``conv`` is not a plain (ungrouped) convolution with such weights behind a per-output-channel (or per-tensor)
    ``DequantizeLinear`` that only it reads."""
    if any(attribute.name == "group" and attribute.i != 1 for attribute in conv.attribute):
        return None
    dequantize = producers.get(conv.input[1])
    if dequantize is None or dequantize.op_type != "DequantizeLinear" or len(consumers[dequantize.output[0]]) != 1:
        return None
    if any(attribute.name == "axis" and attribute.i not in (0, -4) for attribute in dequantize.attribute):
        return None  # scales along the input channels would need padding too
    weight = initializers.get(dequantize.input[0])
    if weight is None or len(consumers.get(weight.name, [])) != 1:
        return None
    values = numpy_helper.to_array(weight)
    if values.ndim != 4 or values.shape[1] >= channels:
        return None
    padding = np.zeros((values.shape[0], channels - values.shape[1], *values.shape[2:]), dtype=values.dtype)
    return weight, np.concatenate([values, padding], axis=1)


def pad_image_channels(model: onnx.ModelProto, channels: int = CHANNEL_GROUP) -> list[str]:
    """Pad, in place, every graph input quantized straight into int8 convolutions to ``channels`` channels
    (see the module docstring); returns the names of the convolutions padded (none: the graph is unchanged)."""
    producers = {output: node for node in model.graph.node for output in node.output}
    consumers = _consumers(model)
    initializers = {initializer.name: initializer for initializer in model.graph.initializer}
    padded: list[str] = []
    for graph_input in model.graph.input:
        for quantize in [node for node in consumers.get(graph_input.name, []) if node.op_type == "QuantizeLinear"]:
            dequantizes = consumers.get(quantize.output[0], [])
            if not dequantizes or any(node.op_type != "DequantizeLinear" for node in dequantizes):
                continue
            image = [node.output[0] for node in dequantizes]  # the dequantized image
            readers = [reader for name in image for reader in consumers.get(name, [])]
            if not readers or any(reader.op_type != "Conv" or reader.input[0] not in image for reader in readers):
                continue  # something other than a convolution's data input reads the quantized image
            entries = [_padded_weight(conv, producers, consumers, initializers, channels) for conv in readers]
            weights = [entry for entry in entries if entry is not None]
            inputs = {weight.dims[1] for weight, _ in weights}
            if len(weights) != len(readers) or len(inputs) != 1:
                continue
            extra = channels - inputs.pop()
            amounts = f"{graph_input.name}_channel_padding"
            model.graph.initializer.append(
                numpy_helper.from_array(np.array([0, 0, 0, 0, 0, extra, 0, 0], dtype=np.int64), amounts)
            )
            padded_input = f"{graph_input.name}_padded"
            pad = helper.make_node("Pad", [graph_input.name, amounts], [padded_input], f"{graph_input.name}_Pad")
            model.graph.node.insert(list(model.graph.node).index(quantize), pad)
            quantize.input[0] = padded_input
            for conv, (weight, values) in zip(readers, weights, strict=True):
                weight.CopyFrom(numpy_helper.from_array(values, weight.name))
                padded.append(conv.name)
            stale = {quantize.output[0], *(node.output[0] for node in dequantizes)}
            kept = [info for info in model.graph.value_info if info.name not in stale]  # shapes that changed
            del model.graph.value_info[:]
            model.graph.value_info.extend(kept)
    return padded


def pad_image_channels_file(path: str | os.PathLike, channels: int = CHANNEL_GROUP) -> list[str]:
    """:func:`pad_image_channels` on the ONNX file at ``path``, rewritten atomically when anything changed."""
    path = Path(path)
    model = onnx.load(str(path))
    padded = pad_image_channels(model, channels)
    if padded:
        with atomic_output(path) as temporary:
            onnx.save(model, str(temporary))
        logger.info("%s: the image is padded to %d channels for the int8 convolution(s) %s", path, channels,
                    ", ".join(padded))  # fmt: skip
    return padded
