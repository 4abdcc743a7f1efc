"""The input and output names of an exported ONNX graph: what ``yolov3.export`` writes and
:mod:`yolov3.inference.onnx_backend` expects (here, below both, so that the backend need not import the exporter).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from yolov3.models.yolo_head import YoloHeadSpec

if TYPE_CHECKING:
    from yolov3.inference.region_decode import DarknetHeadSpec

INPUT_NAME = "images"
RAW_OUTPUT_PREFIX = "head_"
# The outputs of a graph with decoding and NMS inside (fixed shapes, padded).
NMS_OUTPUT_NAMES = ("boxes", "scores", "labels", "num_detections")


def head_names(head_specs: Sequence[YoloHeadSpec | DarknetHeadSpec]) -> list[str]:
    """``head_0 ..``: the raw-heads graph's outputs, and the post-processing graph's inputs."""
    return [f"{RAW_OUTPUT_PREFIX}{index}" for index in range(len(head_specs))]
