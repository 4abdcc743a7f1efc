"""ONNX export of a detector: the raw heads, or the whole pipeline with decoding and NMS in the graph.

Graphs take one input ``images`` (B, 3, H, W) float32 RGB in 0..1 (preprocessed as by
:func:`yolov3.inference.preprocess.preprocess`), with a dynamic batch axis by default:

- raw heads (default): outputs ``head_0 .. head_{n-1}``, each (B, A*(5+C), H/s, W/s), exactly ``model(images)``;
  decode and NMS are left to the caller (:func:`~yolov3.inference.decode.decode_outputs` and
  :func:`~yolov3.inference.postprocess.postprocess`, or their port to the deployment language, helped by the
  ``head_specs`` metadata);
- with NMS (:class:`~yolov3.export.nms_graph.NmsOptions`): outputs ``boxes``, ``scores``, ``labels``,
  ``num_detections`` of fixed shapes (see :mod:`yolov3.export.nms_graph`).

A reduced-precision graph with NMS is built in two parts so that decoding and NMS stay in float32: the raw-heads
graph is converted (:mod:`yolov3.export.quantize`), then :func:`attach_postprocess` appends the float32
post-processing graph of :func:`export_postprocess` to it.

Export uses PyTorch's TorchScript-based exporter (``dynamo=False``): torchvision registers ONNX symbolics for
its NMS there, and tracing keeps the graph a plain function of the input with a dynamic batch.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import onnx
import onnx.compose
import torch
from torch import nn

from yolov3.atomic import atomic_output
from yolov3.export.nms_graph import DetectionGraph, DetectionPostprocess, NmsOptions
from yolov3.inference.onnx_names import INPUT_NAME, NMS_OUTPUT_NAMES, head_names
from yolov3.inference.preprocess import Preprocessing
from yolov3.inference.region_decode import DarknetHeadSpec
from yolov3.models.yolo_head import YoloHeadSpec

logger = logging.getLogger(__name__)

DEFAULT_OPSET = 17
MINIMUM_OPSET = 17
BATCH_AXIS_NAME = "batch"
# Node and tensor names of the appended post-processing graph start with this, so none collides with the model's.
POSTPROCESS_PREFIX = "postprocess/"


class ExportError(ValueError):
    """A model, file or option that cannot be exported as asked; the message says what was expected."""


def check_input_size(
    input_size: tuple[int, int], head_specs: Sequence[YoloHeadSpec | DarknetHeadSpec]
) -> tuple[int, int]:
    """``input_size`` as (height, width), checked to be a positive multiple of the largest stride."""
    height, width = (int(side) for side in input_size)
    largest_stride = max(spec.stride for spec in head_specs)
    if min(height, width) < 1 or height % largest_stride or width % largest_stride:
        raise ExportError(f"input size {height}x{width} must be a positive multiple of the stride {largest_stride}")
    return height, width


def is_postprocessed(model: onnx.ModelProto) -> bool:
    """Whether a graph ends in decoding and NMS (outputs ``boxes``, ``scores``, ...) rather than raw heads."""
    return [output.name for output in model.graph.output] == list(NMS_OUTPUT_NAMES)


def export_onnx(
    model: nn.Module,
    head_specs: Sequence[YoloHeadSpec | DarknetHeadSpec],
    path: str | os.PathLike,
    input_size: tuple[int, int],
    nms: NmsOptions | None = None,
    dynamic_batch: bool = True,
    opset: int = DEFAULT_OPSET,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Export ``model`` (raw heads, or with decoding and NMS when ``nms`` is given) to an ONNX file.

    The model is traced in eval mode (its training flag is restored afterwards) at ``input_size`` (height,
    width) with batch 1; ``metadata`` (see :func:`inference_metadata`) goes into ``metadata_props``; the graph
    is checked with ``onnx.checker`` before it replaces ``path``. Returns ``path``.
    """
    if not head_specs:
        raise ExportError("a detector needs at least one head spec to export")
    height, width = check_input_size(input_size, head_specs)
    was_training = model.training
    model.eval()
    graph = model if nms is None else DetectionGraph(model, DetectionPostprocess(head_specs, (height, width), nms))
    outputs = head_names(head_specs) if nms is None else list(NMS_OUTPUT_NAMES)
    example = torch.zeros(1, 3, height, width, device=next(model.parameters()).device)
    try:
        _trace_to_onnx(graph, (example,), [INPUT_NAME], outputs, Path(path), dynamic_batch, opset, metadata)
    finally:
        model.train(was_training)
    kind = "raw heads" if nms is None else "with NMS"
    logger.info("exported %s (%s, opset %d, input %dx%d)", path, kind, opset, height, width)
    return Path(path)


def export_postprocess(
    head_specs: Sequence[YoloHeadSpec | DarknetHeadSpec],
    path: str | os.PathLike,
    input_size: tuple[int, int],
    nms: NmsOptions,
    dynamic_batch: bool = True,
    opset: int = DEFAULT_OPSET,
) -> Path:
    """Export decoding and NMS alone: inputs ``head_0 ..`` (raw heads), outputs ``boxes``, ``scores``, ..."""
    height, width = check_input_size(input_size, head_specs)
    examples = tuple(
        torch.zeros(1, spec.out_channels, height // spec.stride, width // spec.stride) for spec in head_specs
    )
    postprocess = DetectionPostprocess(head_specs, (height, width), nms)
    _trace_to_onnx(
        postprocess, examples, head_names(head_specs), list(NMS_OUTPUT_NAMES), Path(path), dynamic_batch, opset
    )
    return Path(path)


def attach_postprocess(
    model_path: str | os.PathLike, postprocess_path: str | os.PathLike, destination: str | os.PathLike
) -> Path:
    """Append the post-processing graph (:func:`export_postprocess`) to a raw-heads graph: one graph with NMS.

    The raw-heads graph may be fp16 or int8 (with float32 outputs); the post-processing part stays float32.
    """
    model = onnx.load(str(model_path))
    postprocess = onnx.load(str(postprocess_path))
    names = [output.name for output in model.graph.output]
    if names != [graph_input.name for graph_input in postprocess.graph.input]:
        raise ExportError(f"{model_path}: outputs {names} do not feed the inputs of {postprocess_path}")
    postprocess = onnx.compose.add_prefix(postprocess, POSTPROCESS_PREFIX, rename_inputs=False, rename_outputs=False)
    # Both parts come from the same exporter; a converter may have moved one to a newer IR version.
    model.ir_version = postprocess.ir_version = max(model.ir_version, postprocess.ir_version)
    merged = onnx.compose.merge_models(model, postprocess, io_map=[(name, name) for name in names])
    onnx.helper.set_model_props(merged, {prop.key: prop.value for prop in model.metadata_props})
    with atomic_output(destination) as temporary:
        onnx.save(merged, str(temporary))
        check_onnx(temporary)
    return Path(destination)


def _trace_to_onnx(
    module: nn.Module,
    examples: tuple[torch.Tensor, ...],
    input_names: list[str],
    output_names: list[str],
    path: Path,
    dynamic_batch: bool,
    opset: int,
    metadata: Mapping[str, str] | None = None,
) -> None:
    if opset < MINIMUM_OPSET:
        raise ExportError(f"opset {opset} is too old: NMS and the dynamic batch need opset {MINIMUM_OPSET} or newer")
    dynamic_axes = {name: {0: BATCH_AXIS_NAME} for name in (*input_names, *output_names)} if dynamic_batch else None
    with atomic_output(path) as temporary, warnings.catch_warnings():
        # Expected and checked: the TorchScript exporter's and torch.jit.script's deprecation notices (torchvision
        # scripts batched_nms' empty-input branch); tracer notes on static facts (head channel checks, anchor
        # constants, torchvision's size test that picks the traceable NMS); Slice constant-folding notes.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1", category=UserWarning)
        torch.onnx.export(
            module,
            examples,
            str(temporary),
            dynamo=False,
            opset_version=opset,
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=dynamic_axes,
            do_constant_folding=True,
        )
        if metadata:
            write_metadata(temporary, metadata)
        check_onnx(temporary)


def inference_metadata(
    head_specs: Sequence[YoloHeadSpec | DarknetHeadSpec],
    input_size: tuple[int, int],
    preprocessing: Preprocessing,
    class_names: Sequence[str] | None = None,
    nms: NmsOptions | None = None,
    normalization: str = "darknet",
    source_format: str | None = None,
) -> dict[str, str]:
    """What a deployment needs besides the graph, as ONNX ``metadata_props`` (JSON values).

    ``head_specs`` (anchors in input pixels, stride, classes, scale_x_y per head, to decode raw heads; a
    [region], [Gaussian_yolo] or new_coords [yolo] head adds its ``kind`` and the keys that steer decoding),
    ``input_size`` [height, width], ``preprocessing`` {letterbox, fill, resampling}, ``normalization`` (darknet:
    RGB/255, or imagenet), ``class_names`` when known, ``nms`` {conf_threshold, iou_threshold, max_detections}
    for a graph with NMS, and ``source_format`` (``checkpoint`` or ``darknet``: what the graph was exported from;
    detect gives Darknet's output to Darknet weights) when given. ``evaluate --weights model.onnx`` and
    ``detect`` read them back (:mod:`yolov3.inference.onnx_backend`).
    """
    metadata = {
        "head_specs": json.dumps([_describe_head(spec) for spec in head_specs]),
        "input_size": json.dumps(list(input_size)),
        "preprocessing": json.dumps(dataclasses.asdict(preprocessing)),
        "normalization": json.dumps(normalization),
    }
    if source_format is not None:
        metadata["source_format"] = json.dumps(source_format)
    if class_names is not None:
        metadata["class_names"] = json.dumps(list(class_names))
    if nms is not None:
        graph_settings = ("conf_threshold", "iou_threshold", "max_detections")  # the rest is fixed in the graph
        metadata["nms"] = json.dumps({name: getattr(nms, name) for name in graph_settings})
    return metadata


def _describe_head(spec: YoloHeadSpec | DarknetHeadSpec) -> dict:
    if isinstance(spec, DarknetHeadSpec):  # [region], [Gaussian_yolo], new_coords [yolo]
        return spec.describe()
    return dataclasses.asdict(spec)


def write_metadata(path: str | os.PathLike, metadata: Mapping[str, str]) -> None:
    """Set ``metadata`` as the ``metadata_props`` of the ONNX file at ``path`` (in place)."""
    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, dict(metadata))
    onnx.save(model, str(path))


def check_onnx(path: str | os.PathLike) -> None:
    """``onnx.checker.check_model`` on a file; raises :class:`ExportError` naming it when the graph is invalid."""
    try:
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as error:
        raise ExportError(f"{path}: the exported graph is not valid ONNX: {error}") from error
