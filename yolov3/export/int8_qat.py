"""A quantization-aware trained detector to an int8 QDQ ONNX graph that onnxruntime runs in int8.

:func:`export_qat_onnx` writes the raw-heads graph of a :class:`~yolov3.compression.qat.QuantizationAwareDetector`
with its own quantization parameters, no calibration:

1. :func:`deployable_network`: a copy in eval mode with torch.ao's QAT conv + batch-norm modules folded into
   QAT convs (``to_float`` folds the batch norm, as ``convert_fx`` does), the weight scales recomputed on the
   folded weights (``max |w| / 127`` per output channel, as ``convert_fx`` and onnxruntime compute them) and
   every observer off: its forward is torch.ao's reference int8 model
   (:func:`~yolov3.compression.qat.reference_quantized_model`);
2. the TorchScript exporter writes its fake quantization as ``QuantizeLinear`` / ``DequantizeLinear`` pairs:
   uint8 activations, and int8 per-channel weights (ONNX has no -127..127 mode: the int8 range -128..127 is
   written, which quantizes these weights to the same values since no weight reaches -127.5 scales);
3. onnxruntime's basic graph optimizations (constant folding) store each weight as its int8 values behind a
   ``DequantizeLinear`` (and each conv bias as int32, scale input scale x weight scale, as ``quantize_static``
   does), so the file holds int8 weights: about 4x smaller than fp32;
4. the image gets a fourth, zero channel for the int8 stem
   (:mod:`yolov3.export.image_channel_padding`: the same outputs, and onnxruntime's int8 kernels run 4 input
   channels about twice as fast as 3).

onnxruntime then fuses ``DequantizeLinear -> Conv -> QuantizeLinear`` into ``QLinearConv`` (and LeakyRelu,
Concat, ... into their QLinear forms): the same int8 graph as the PTQ export of
:func:`~yolov3.export.quantize.quantize_int8`, with the ranges and weights of QAT.
"""

from __future__ import annotations

import copy
import logging
import os
import tempfile
from pathlib import Path
from typing import cast

import onnx
import onnxruntime
import torch
import torch.ao.nn.intrinsic.qat as intrinsic_qat
from onnx import numpy_helper
from torch import nn
from torch.ao.quantization.observer import UniformQuantizationObserverBase
from torch.ao.quantization.quantization_mappings import get_default_qat_module_mappings

from yolov3.atomic import atomic_output
from yolov3.compression.qat import (
    WEIGHT_RANGE,
    QuantizationAwareDetector,
    fake_quantizers,
    torch_ao_quantization,
    weight_quantized_modules,
)
from yolov3.export.image_channel_padding import pad_image_channels_file
from yolov3.export.onnx_export import DEFAULT_OPSET, ExportError, check_onnx, export_onnx, write_metadata
from yolov3.export.quantize import check_quantization_scales

logger = logging.getLogger(__name__)

ONNX_INT8_MIN = -128  # the lower end of the int8 range the exporter accepts (with 127)
DEFAULT_DOMAINS = ("", "ai.onnx")
# torch.ao's QAT convs with a batch norm to fold (prepare_qat_fx fuses conv + batch norm [+ ReLU] into these).
FUSED_BATCH_NORM_CONVS = (intrinsic_qat.ConvBn2d, intrinsic_qat.ConvBnReLU2d)


def deployable_network(detector: QuantizationAwareDetector) -> nn.Module:
    """A copy of the detector's graph ready for ONNX export (see the module docstring, step 1)."""
    network = copy.deepcopy(detector.network).eval()
    qat_classes = get_default_qat_module_mappings()
    for name, module in list(network.named_modules()):
        if not isinstance(module, FUSED_BATCH_NORM_CONVS):
            continue  # plain QAT convs (no batch norm) export as they are
        with torch_ao_quantization():
            folded = module.to_float()  # the float conv with the batch norm folded into its weight and bias
            folded.qconfig = module.qconfig
            replacement = qat_classes[type(folded)].from_float(folded)
        replacement.weight_fake_quant = module.weight_fake_quant
        parent, _, leaf = name.rpartition(".")
        setattr(network.get_submodule(parent) if parent else network, leaf, replacement)
    for module, quantizer in weight_quantized_modules(network):
        quantizer.enable_observer()
        quantizer(cast(torch.Tensor, module.weight).detach())  # the scales of the weights exported
    weights, activations = fake_quantizers(network)
    for quantizer in (*weights, *activations):
        quantizer.disable_observer()
    for quantizer in weights:
        # ONNX QuantizeLinear saturates to -128..127; weights quantized with scale max|w|/127 stay in -127..127.
        cast(UniformQuantizationObserverBase, quantizer.activation_post_process).quant_min = ONNX_INT8_MIN
    for quantizer in activations:
        # Per-tensor qparams as ONNX scalars (torch.ao keeps them as 1-element vectors, ONNX's per-axis form).
        for name in ("scale", "zero_point"):
            setattr(quantizer, name, cast(torch.Tensor, getattr(quantizer, name)).reshape(()))
    return network


def fold_weight_quantization(source: str | os.PathLike, destination: str | os.PathLike) -> Path:
    """Store the quantized weights of the QDQ graph ``source`` as int8 (onnxruntime's basic, hardware-independent
    graph optimizations: ``QuantizeLinear`` of a constant is folded) at ``destination``; metadata is kept."""
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
    with tempfile.TemporaryDirectory(prefix="yolov3-int8-") as directory:
        optimized = Path(directory) / "optimized.onnx"
        options.optimized_model_filepath = str(optimized)
        onnxruntime.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
        model = onnx.load(str(optimized))
    used = {node.domain for node in model.graph.node} | set(DEFAULT_DOMAINS)
    kept = [entry for entry in model.opset_import if entry.domain in used]  # onnxruntime lists all of its domains
    del model.opset_import[:]
    model.opset_import.extend(kept)
    onnx.helper.set_model_props(model, {prop.key: prop.value for prop in onnx.load(str(source)).metadata_props})
    destination = Path(destination)
    with atomic_output(destination) as temporary:
        onnx.save(model, str(temporary))
        check_onnx(temporary)
    return destination


def check_int8_weights(path: str | os.PathLike) -> int:
    """Raise :class:`ExportError` unless every convolution reads int8 weights (-127..127) through a
    ``DequantizeLinear``; returns how many do. Convolutions left in float (``keep_float``) are allowed."""
    model = onnx.load(str(path))
    initializers = {initializer.name: initializer for initializer in model.graph.initializer}
    producers = {output: node for node in model.graph.node for output in node.output}
    quantized = 0
    for node in (node for node in model.graph.node if node.op_type == "Conv"):
        source = producers.get(node.input[1])
        if source is None or source.op_type != "DequantizeLinear":
            continue  # a float conv
        weight = initializers.get(source.input[0])
        if weight is None or weight.data_type != onnx.TensorProto.INT8:
            raise ExportError(f"{path}: conv {node.name!r} reads quantized weights that are not stored as int8")
        values = numpy_helper.to_array(weight)
        if values.size and int(values.min()) < WEIGHT_RANGE[0]:
            raise ExportError(f"{path}: conv {node.name!r} has int8 weights below {WEIGHT_RANGE[0]} ({values.min()})")
        quantized += 1
    if not quantized:
        raise ExportError(f"{path}: no convolution reads int8 weights")
    return quantized


def export_qat_onnx(
    detector: QuantizationAwareDetector,
    path: str | os.PathLike,
    input_size: tuple[int, int],
    dynamic_batch: bool = True,
    opset: int = DEFAULT_OPSET,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write the int8 QDQ raw-heads graph of ``detector`` at ``path`` (see the module docstring); returns it.

    For decoding and NMS in the graph, append them with :func:`~yolov3.export.onnx_export.attach_postprocess`.
    """
    path = Path(path)
    network = deployable_network(detector).cpu()  # traced and folded on the CPU, wherever it was trained
    with tempfile.TemporaryDirectory(prefix="yolov3-qat-export-") as directory:
        traced = Path(directory) / "fake_quant.onnx"
        export_onnx(network, detector.head_specs, traced, input_size, None, dynamic_batch, opset)
        fold_weight_quantization(traced, path)
    pad_image_channels_file(path)  # bit-identical outputs, a faster int8 stem
    if metadata:
        write_metadata(path, metadata)
    check_quantization_scales(path)
    convs = check_int8_weights(path)
    logger.info("wrote int8 QAT model %s (%d int8 convs, %.1f kB)", path, convs, path.stat().st_size / 1e3)
    return path
