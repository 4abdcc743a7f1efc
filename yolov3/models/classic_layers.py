"""Modules for the classic sections ([lrn], [crop], [local], [detection], [deconvolutional]) from their graph nodes."""

from __future__ import annotations

from torch import nn

from yolov3.darknet.cfg import CropSection, DeconvolutionalSection, DetectionSection, LocalSection, LrnSection
from yolov3.darknet.graph import LayerNode
from yolov3.models.crop import CenterCrop
from yolov3.models.deconvolution import Deconvolution
from yolov3.models.detection_head import DetectionOutput
from yolov3.models.local import LocallyConnected
from yolov3.models.local_response_norm import LocalResponseNorm


def build_classic_layer(node: LayerNode) -> nn.Module:
    """The module of a classic section's layer (``CfgError`` for any other section)."""
    section = node.section
    if isinstance(section, LrnSection):
        return LocalResponseNorm(section)
    if isinstance(section, CropSection):
        return CenterCrop(section, node.input_shape[1], node.input_shape[2])
    if isinstance(section, LocalSection):
        return LocallyConnected(section, node.input_shape)
    if isinstance(section, DetectionSection):
        return DetectionOutput(section)
    if isinstance(section, DeconvolutionalSection):
        return Deconvolution(section, node.in_channels)
    raise section.error("is not a classic section")  # pragma: no cover - callers pass classic sections only


# The classic modules with ``.weights`` tensors (``darknet_tensors()``, in file order)
WEIGHTED_CLASSIC_MODULES = (LocallyConnected, Deconvolution)
