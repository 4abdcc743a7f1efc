"""Running an exported ONNX detector in ONNX Runtime as if it were one of our PyTorch models.

:class:`OnnxHeadsModel` wraps an ``onnxruntime.InferenceSession`` (CPU provider) of a raw-heads graph written by
``python -m yolov3.export`` (fp32, fp16 or int8 QDQ): its ``forward`` takes the float32 (B, 3, H, W) batch and
returns the list of raw head tensors (B, A*(5+C), H/s, W/s), as our ``nn.Module`` detectors do, so decoding,
NMS, :class:`~yolov3.inference.predictor.Predictor` and evaluation run unchanged.

What the graph alone does not say (head specs, input size, preprocessing, class names, normalization) comes
from the ``metadata_props`` that export writes (:func:`yolov3.export.onnx_export.inference_metadata`);
:func:`read_onnx_model` returns them parsed, and :mod:`yolov3.inference.model_loading` checks them as it
checks a checkpoint's. A graph without them, or one with decoding and NMS in it (``--with-nms``: its fixed
score threshold and detection cap make mAP meaningless, and detect has its own NMS), is refused with an
error naming the file.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
import torch
from torch import nn

from yolov3.inference.onnx_names import INPUT_NAME, NMS_OUTPUT_NAMES, head_names
from yolov3.models.yolo_head import YoloHeadSpec

logger = logging.getLogger(__name__)

ONNX_SUFFIX = ".onnx"
PROVIDER = "CPUExecutionProvider"
QDQ_OPERATORS = ("QuantizeLinear", "DequantizeLinear")
QOPERATOR_OPERATORS = ("QLinearConv", "ConvInteger", "MatMulInteger", "QLinearMatMul")


class OnnxModelError(ValueError):
    """An ONNX file that cannot run as a detector here; the message names the file and what was expected."""


def graph_precision(model: onnx.ModelProto) -> str:
    """``"int8 QDQ"``, ``"int8 QOperator"``, ``"fp16"`` or ``"fp32"``: how the graph's convolutions compute."""
    operators = {node.op_type for node in model.graph.node}
    if operators.intersection(QDQ_OPERATORS):
        return "int8 QDQ"
    if operators.intersection(QOPERATOR_OPERATORS):
        return "int8 QOperator"
    if any(initializer.data_type == onnx.TensorProto.FLOAT16 for initializer in model.graph.initializer):
        return "fp16"
    return "fp32"


class OnnxHeadsModel(nn.Module):
    """An ONNX Runtime session of a raw-heads graph behind the interface of our detectors.

    ``forward(images)`` runs the session on the (B, 3, H, W) batch (any device; ONNX Runtime runs on the CPU
    and the heads come back on the batch's device, as float32). A graph exported with a fixed batch is run
    that many images at a time. The module has no parameters: ``.to()``, ``.eval()`` and ``.train()`` change
    nothing, and ``precision`` (the graph's) and ``description`` say what runs.
    """

    def __init__(self, path: Path, session: onnxruntime.InferenceSession, precision: str) -> None:
        super().__init__()
        self.path = path
        self.session = session
        self.precision = precision
        graph_input = session.get_inputs()[0]
        self.input_name = graph_input.name
        batch, _, height, width = graph_input.shape  # (B, 3, H, W); B a name when the batch axis is dynamic
        self.fixed_batch = batch if isinstance(batch, int) else None
        self.input_size = (height, width) if isinstance(height, int) and isinstance(width, int) else None
        self.output_names = [output.name for output in session.get_outputs()]
        threads = session.get_session_options().intra_op_num_threads
        detail = f", {threads} thread{'s' if threads > 1 else ''}" if threads > 0 else ""
        self.description = f"onnxruntime {onnxruntime.__version__} ({session.get_providers()[0]}, {precision}{detail})"

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        if images.dim() != 4 or (self.input_size is not None and tuple(images.shape[2:]) != self.input_size):
            expected = "x".join(map(str, self.input_size)) if self.input_size else "H x W"
            raise ValueError(
                f"{self.path}: the graph takes (B, 3, {expected}) inputs, got {tuple(images.shape)}; "
                "export it again at the size wanted (python -m yolov3.export --img-size)"
            )
        array = images.detach().to("cpu", torch.float32).contiguous().numpy()
        step = self.fixed_batch or len(array)
        chunks = [
            self.session.run(self.output_names, {self.input_name: array[start : start + step]})
            for start in range(0, len(array), max(step, 1))
        ]
        heads = [np.concatenate([chunk[index] for chunk in chunks]) for index in range(len(self.output_names))]
        return [torch.from_numpy(head).to(images.device) for head in heads]

    def extra_repr(self) -> str:
        return f"{self.path}, {self.description}"


@dataclass(frozen=True)
class OnnxFile:
    """A session of an ONNX detector and what its metadata says: ``head_specs`` parsed, the other entries
    (``input_size``, ``preprocessing``, ``class_names``, ``normalization``, ``source_format``) as JSON values."""

    model: OnnxHeadsModel
    head_specs: list[YoloHeadSpec]
    metadata: dict[str, Any]


def read_onnx_model(path: str | os.PathLike, threads: int | None = None) -> OnnxFile:
    """Open the raw-heads ONNX detector at ``path`` in ONNX Runtime (CPU, ``threads`` intra-op threads;
    ``None``: ONNX Runtime's default) with its metadata. Raises :class:`OnnxModelError` naming the file."""
    path = Path(path)
    if threads is not None and threads < 1:
        raise OnnxModelError(f"{path}: the ONNX Runtime thread count must be at least 1, got {threads}")
    try:
        graph = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # protobuf's DecodeError and friends: not an ONNX file
        raise OnnxModelError(f"{path}: not a readable ONNX model ({type(error).__name__}: {error})") from error
    outputs = [output.name for output in graph.graph.output]
    if outputs == list(NMS_OUTPUT_NAMES):
        raise OnnxModelError(
            f"{path}: has decoding and NMS in the graph (exported with --with-nms, at a fixed score threshold and "
            "detection cap); evaluate and detect need the raw-heads graph: export it without --with-nms"
        )
    metadata = {prop.key: prop.value for prop in graph.metadata_props}
    if "head_specs" not in metadata:
        raise OnnxModelError(
            f"{path}: no yolov3 metadata (head specs); export it with python -m yolov3.export, which writes them"
        )
    parsed = {key: _json(path, key, value) for key, value in metadata.items()}
    head_specs = _head_specs(path, parsed.pop("head_specs"))
    inputs = [graph_input.name for graph_input in graph.graph.input]
    if INPUT_NAME not in inputs or outputs != head_names(head_specs):
        raise OnnxModelError(
            f"{path}: expected input {INPUT_NAME!r} and outputs {head_names(head_specs)} (one per head spec), "
            f"found inputs {inputs} and outputs {outputs}"
        )
    options = onnxruntime.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    try:
        session = onnxruntime.InferenceSession(str(path), options, providers=[PROVIDER])
    except Exception as error:  # onnxruntime's own exception types (Fail, InvalidGraph, ...)
        raise OnnxModelError(f"{path}: ONNX Runtime cannot load it ({error})") from error
    model = OnnxHeadsModel(path, session, graph_precision(graph))
    size = parsed.get("input_size")
    if model.input_size is not None and size is not None and list(size) != list(model.input_size):
        raise OnnxModelError(f"{path}: metadata input_size {size} but the graph takes {list(model.input_size)}")
    logger.debug("opened %s: %s", path, model.description)
    return OnnxFile(model, head_specs, parsed)


def _json(path: Path, key: str, value: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError as error:
        raise OnnxModelError(f"{path}: metadata {key!r} is not JSON ({error})") from error


def _head_specs(path: Path, value: Any) -> list[YoloHeadSpec]:
    """``[{anchors_px: [[w, h], ..], stride, num_classes, scale_x_y}, ..]`` as :class:`YoloHeadSpec`s."""
    expected = "a list of {anchors_px: [[w, h], ...], stride, num_classes, scale_x_y}"
    if not isinstance(value, list) or not value:
        raise OnnxModelError(f"{path}: metadata 'head_specs' must be {expected}, got {value!r}")
    specs = []
    for index, entry in enumerate(value):
        try:
            if not isinstance(entry, Mapping):
                raise TypeError(f"not a mapping: {entry!r}")
            if "kind" in entry:  # a DarknetHeadSpec's description: [region], [Gaussian_yolo], new_coords [yolo]
                raise OnnxModelError(
                    f"{path}: head {index} is a {entry['kind']} head; the ONNX backend decodes plain [yolo] heads "
                    "only: run the .cfg and .weights it was exported from instead"
                )
            anchors = tuple((float(width), float(height)) for width, height in entry["anchors_px"])
            scale_x_y = float(entry.get("scale_x_y", 1.0))
            spec = YoloHeadSpec(anchors, int(entry["stride"]), int(entry["num_classes"]), scale_x_y)
        except (KeyError, TypeError, ValueError) as error:
            raise OnnxModelError(f"{path}: metadata 'head_specs'[{index}] must be {expected} ({error})") from error
        specs.append(spec)
    return specs
