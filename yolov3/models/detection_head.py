"""``[detection]``: the YOLOv1 head. Its output is the flat input (no ``.weights``); decoding lives in
:mod:`yolov3.inference.detection_decode`."""

from __future__ import annotations

import torch
from torch import nn

from yolov3.darknet.cfg import DetectionSection


class DetectionOutput(nn.Module):
    """Marks a [detection] layer: forward passes its input through as (B, N, 1, 1), N the flat size
    ``side * side * (5 * num + classes)``, like the raw outputs of the other heads (Darknet's in-place
    softmax is :func:`detection_layer_output`, applied when boxes are decoded)."""

    def __init__(self, section: DetectionSection) -> None:
        super().__init__()
        self.section = section
        self.num_classes = section.classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1, 1, 1)  # (B, C, H, W) -> (B, C*H*W, 1, 1)


def detection_layer_output(section: DetectionSection, raw: torch.Tensor) -> torch.Tensor:
    """``forward_detection_layer`` at test time: the raw (B, N, 1, 1) head output with, when ``softmax=1``, a
    softmax over each cell's class scores (the first ``side * side * classes`` values, cell-major); the
    confidences and boxes after them are left as they are. Returns (B, N)."""
    flat = raw.reshape(raw.shape[0], -1)  # (B, N, 1, 1) -> (B, N)
    if not section.softmax:
        return flat
    cells, classes = section.side * section.side, section.classes
    # (B, S*S*C) -> (B, S*S, C)
    scores = flat[:, : cells * classes].reshape(-1, cells, classes).softmax(-1)
    return torch.cat((scores.reshape(-1, cells * classes), flat[:, cells * classes :]), 1)  # (B, N)
