"""Reduced-precision ONNX models: fp16 conversion and int8 static quantization calibrated on real images.

- :func:`convert_to_fp16`: onnxruntime's float16 converter (``onnxruntime.transformers``: the converter of
  onnxconverter-common, then redundant casts removed and the graph sorted) with float32 inputs and outputs
  (``keep_io_types``), so callers feed and read the same tensors as for the fp32 model.
- :func:`quantize_int8`: onnxruntime's static quantization in QDQ format, int8 per-channel weights and uint8
  activations whose ranges come from calibration images (MinMax). :class:`CalibrationImages` feeds the
  images preprocessed exactly as at inference (:func:`yolov3.inference.preprocess.preprocess`), and
  :func:`select_calibration_images` picks them: ``per_class`` images containing each class from a dataset
  YAML (labels only are read to choose), or the first ``per_class`` images of a plain directory.

Both convert raw-heads graphs. For a reduced-precision graph with NMS, convert the raw-heads graph and append
the float32 decoding and NMS with :func:`~yolov3.export.onnx_export.attach_postprocess`: box coordinates in
pixels need more than fp16's 11 bits, and NMS's per-class box offsets overflow fp16's range.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
from onnx import numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process
from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST
from onnxruntime.transformers.onnx_model import OnnxModel

from yolov3.atomic import atomic_output
from yolov3.data.dataset_config import Split, build_dataset, load_dataset_config
from yolov3.data.image_io import IMAGE_SUFFIXES, list_images, read_image_rgb
from yolov3.export.image_channel_padding import pad_image_channels_file
from yolov3.export.onnx_export import ExportError, is_postprocessed
from yolov3.inference.preprocess import Preprocessing, preprocess

logger = logging.getLogger(__name__)

DATASET_SUFFIXES = (".yaml", ".yml")
SELECTION_SEED = 0
CALIBRATION_SPLIT: Split = "train"


def convert_to_fp16(source: str | os.PathLike, destination: str | os.PathLike) -> Path:
    """Write an fp16 copy of the fp32 ONNX model ``source``, keeping float32 inputs and outputs."""
    destination = Path(destination)
    model = OnnxModel(_load_raw_heads_graph(source))
    model.convert_float_to_float16(
        use_symbolic_shape_infer=False,  # plain ONNX shape inference knows every op of these graphs
        keep_io_types=True,
        op_block_list=DEFAULT_OP_BLOCK_LIST,
    )
    model.topological_sort()  # the converter appends the float32 -> float16 input casts at the end of the graph
    with atomic_output(destination) as temporary:
        onnx.save(model.model, str(temporary))
    logger.info("wrote fp16 model %s", destination)
    return destination


def _load_raw_heads_graph(path: str | os.PathLike) -> onnx.ModelProto:
    model = onnx.load(str(path))
    if is_postprocessed(model):
        raise ExportError(
            f"{path}: has decoding and NMS in the graph; convert the raw-heads graph, then attach_postprocess"
        )
    return model


def infinite_padding_nodes(model: onnx.ModelProto) -> list[str]:
    """``Pad`` nodes that fill with an infinite value, and the nodes they feed.

    Darknet's max pooling pads with -inf (:class:`~yolov3.models.layers.DarknetMaxPool`), which exports as
    ``Pad(-inf)`` + ``MaxPool``: the padded tensor's calibration range is infinite, so it cannot be quantized.
    These nodes stay in float; the pool's output, which is finite, is quantized where the next conv reads it.
    """
    graph = model.graph
    constants = {initializer.name: numpy_helper.to_array(initializer) for initializer in graph.initializer}
    for node in graph.node:
        values = [attribute.t for attribute in node.attribute if attribute.name == "value"]
        if node.op_type == "Constant" and values:
            constants[node.output[0]] = numpy_helper.to_array(values[0])
    padding = [
        node
        for node in graph.node
        if node.op_type == "Pad"
        and len(node.input) > 2
        and node.input[2] in constants
        and not np.isfinite(constants[node.input[2]]).all()
    ]
    padded = {output for node in padding for output in node.output}
    consumers = [node for node in graph.node if padded.intersection(node.input)]
    return [node.name for node in (*padding, *consumers)]


def check_quantization_scales(path: str | os.PathLike) -> None:
    """Raise :class:`ExportError` naming the tensor when a quantization scale of the graph is not finite and > 0."""
    model = onnx.load(str(path))
    scales = {initializer.name: initializer for initializer in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and node.input[1] in scales:
            scale = numpy_helper.to_array(scales[node.input[1]])
            if not (np.isfinite(scale).all() and (scale > 0).all()):
                raise ExportError(f"{path}: tensor {node.input[0]!r} got an unusable quantization scale {scale}")


def select_calibration_images(
    source: str | os.PathLike, per_class: int, split: str = CALIBRATION_SPLIT, seed: int = SELECTION_SEED
) -> list[Path]:
    """Calibration image paths from a dataset YAML (``per_class`` images per class) or an image directory.

    From a dataset, images are visited in a seeded random order and one is taken while any class it
    contains still has fewer than ``per_class`` images (so each class gets ``per_class`` when the split has
    them; an image counts for every class it shows). Only labels are read to choose. From a directory,
    the first ``per_class`` images in name order are taken (``per_class`` is then the total).
    Only the ``train`` split calibrates: activation ranges fitted to the images a model is scored on would
    flatter the score, so ``val`` and ``test`` are refused.
    """
    if split != CALIBRATION_SPLIT:
        raise ExportError(
            f"calibration reads the {CALIBRATION_SPLIT!r} split only (never the images the model is scored on), "
            f"got split {split!r}"
        )
    if per_class < 1:
        raise ExportError(f"calibration needs at least 1 image per class, got {per_class}")
    path = Path(source)
    if path.is_dir():
        images = list_images(path)[:per_class]
        if not images:
            raise ExportError(f"{path}: no calibration images (looked for {', '.join(IMAGE_SUFFIXES)})")
        logger.info("calibration: %d images from %s", len(images), path)
        return images
    if path.suffix.lower() in DATASET_SUFFIXES and path.is_file():
        return _images_per_class(path, per_class, CALIBRATION_SPLIT, seed)  # split is CALIBRATION_SPLIT
    raise ExportError(f"{path}: calibration data must be a dataset YAML or a directory of images")


def _images_per_class(config_path: Path, per_class: int, split: Split, seed: int) -> list[Path]:
    dataset = build_dataset(load_dataset_config(config_path), split, progress=False)
    counts = np.zeros(dataset.num_classes, dtype=np.int64)
    chosen: list[Path] = []
    for index in np.random.default_rng(seed).permutation(len(dataset)):
        _, labels, _ = dataset.boxes_and_labels(int(index))
        present = np.unique(labels)
        if present.size and (counts[present] < per_class).any():
            counts[present] += 1
            chosen.append(dataset.record(int(index)).path)
        if (counts >= per_class).all():
            break
    short = [name for name, count in zip(dataset.class_names, counts, strict=True) if count < per_class]
    if short:
        logger.warning("calibration: fewer than %d %s images in %s", per_class, ", ".join(short), config_path)
    if not chosen:
        raise ExportError(f"{config_path}: the {split} split has no labelled images to calibrate on")
    logger.info("calibration: %d images from %s (%s split)", len(chosen), config_path, split)
    return chosen


class CalibrationImages(CalibrationDataReader):
    """Feeds images one at a time, as (1, 3, height, width) float32 batches named ``input_name``."""

    def __init__(
        self,
        image_paths: Sequence[Path],
        input_name: str,
        input_size: tuple[int, int],
        preprocessing: Preprocessing | None = None,
    ) -> None:
        if not image_paths:
            raise ExportError("calibration needs at least one image")
        self.image_paths = list(image_paths)
        self.input_name = input_name
        height, width = input_size
        self.input_size = (height, width)
        self.preprocessing = preprocessing or Preprocessing()
        self._next_index = 0

    def __len__(self) -> int:
        return len(self.image_paths)

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next_index >= len(self.image_paths):
            return None
        image = read_image_rgb(self.image_paths[self._next_index])  # ImageReadError names the file
        self._next_index += 1
        tensor, _ = preprocess(image, self.input_size, self.preprocessing)  # (3, height, width)
        return {self.input_name: tensor.numpy()[None]}  # (3, H, W) -> (1, 3, H, W)

    def rewind(self) -> None:
        self._next_index = 0


def quantize_int8(
    source: str | os.PathLike,
    destination: str | os.PathLike,
    calibration: CalibrationDataReader,
    per_channel: bool = True,
    reduce_range: bool = False,
) -> Path:
    """Write an int8 (QDQ) copy of the fp32 ONNX model ``source``, activation ranges from ``calibration``.

    The model first goes through onnxruntime's ``quant_pre_process`` (shape inference and graph
    optimization, as onnxruntime recommends); max pooling with Darknet's -inf padding stays in float
    (:func:`infinite_padding_nodes`). Weights are int8 (per output channel when ``per_channel``),
    activations uint8 (the fast pair on x86 with VNNI; ``reduce_range`` uses 7-bit weights for CPUs without).
    The image gets a fourth, zero channel for the int8 stem (:mod:`yolov3.export.image_channel_padding`).
    """
    destination = Path(destination)
    _load_raw_heads_graph(source)
    with tempfile.TemporaryDirectory(prefix="yolov3-quantize-") as directory:
        prepared = Path(directory) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        excluded = infinite_padding_nodes(onnx.load(str(prepared)))
        # onnxruntime computes scales for every calibrated tensor, the excluded infinite ones too (0/0 there,
        # unused); the scales that the graph does use are checked below.
        with atomic_output(destination) as temporary, np.errstate(invalid="ignore"):
            quantize_static(
                str(prepared),
                str(temporary),
                calibration,
                quant_format=QuantFormat.QDQ,
                per_channel=per_channel,
                reduce_range=reduce_range,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=excluded,
                calibrate_method=CalibrationMethod.MinMax,
            )
            pad_image_channels_file(temporary)  # bit-identical outputs, a faster int8 stem
            check_quantization_scales(temporary)
    logger.info(
        "wrote int8 model %s: onnxruntime %s quantize_static (QDQ; int8 symmetric %s weights, uint8 activations, "
        "MinMax ranges from %s)",
        destination, onnxruntime.__version__, "per-channel" if per_channel else "per-tensor", _describe(calibration),
    )  # fmt: skip
    return destination


def _describe(calibration: CalibrationDataReader) -> str:
    if isinstance(calibration, CalibrationImages):
        return f"{len(calibration)} calibration images (first {calibration.image_paths[0]})"
    return f"{type(calibration).__name__} batches"
