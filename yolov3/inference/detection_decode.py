"""Decoding a [detection] (YOLOv1) head into the (B, N, 5+C) rows of :mod:`yolov3.inference.decode`, as
Darknet's ``get_detection_detections`` reads the layer's output.

The output (after the forward's optional per-cell softmax) holds, for an S x S grid with ``num`` boxes per
cell: S*S*C class scores (cell-major), then S*S*num confidences, then S*S*num boxes of x, y, w, h. Box
``(cell, n)`` with cell = row * S + col becomes the row ``cell * num + n``:

- cx = (x + col) / S * input_width, cy = (y + row) / S * input_height (no logistic);
- w = x_w^2 * input_width, h = x_h^2 * input_height with ``sqrt=1``, else w = x_w * input_width;
- objectness = the box's confidence as is; class scores = the cell's (shared by its ``num`` boxes).

A detection's score is objectness times a class score, Darknet's ``prob = scale * class``; Darknet then zeroes
the probabilities at or below its threshold, which the postprocessing's threshold does here.
"""

from __future__ import annotations

import torch

from yolov3.darknet.cfg import DetectionSection
from yolov3.models.detection_head import detection_layer_output


def decode_detection_head(section: DetectionSection, output: torch.Tensor, input_size: tuple[int, int]) -> torch.Tensor:
    """One [detection] head output (B, N, 1, 1) -> (B, S*S*num, 5+C); ``input_size`` is (height, width)."""
    side, num, classes = section.side, section.num, section.classes
    if output[0].numel() != section.inputs:
        raise ValueError(f"{section.where()} expects {section.inputs} values per image, got {output[0].numel()}")
    input_height, input_width = input_size
    flat = detection_layer_output(section, output)  # (B, N)
    batch, cells = flat.shape[0], side * side
    class_end, confidence_end = cells * classes, cells * (classes + num)
    scores = flat[:, :class_end].reshape(batch, cells, 1, classes)  # (B, S*S*C) -> (B, S*S, 1, C)
    confidences = flat[:, class_end:confidence_end].reshape(batch, cells, num, 1)  # (B, S*S*num) -> (B, S*S, num, 1)
    boxes = flat[:, confidence_end:].reshape(batch, cells, num, 4)  # (B, S*S*num*4) -> (B, S*S, num, 4)
    cell = torch.arange(cells, device=output.device)
    rows = (cell // side).to(output.dtype).reshape(1, cells, 1)  # (1, S*S, 1)
    columns = (cell % side).to(output.dtype).reshape(1, cells, 1)
    centers_x = (boxes[..., 0] + columns) / side * input_width  # (B, S*S, num)
    centers_y = (boxes[..., 1] + rows) / side * input_height
    sizes = boxes[..., 2:4] ** 2 if section.sqrt else boxes[..., 2:4]  # (B, S*S, num, 2)
    pixels = torch.tensor([input_width, input_height], dtype=output.dtype, device=output.device)
    decoded = torch.cat(
        (
            torch.stack((centers_x, centers_y), -1),
            sizes * pixels,
            confidences,
            scores.expand(batch, cells, num, classes),
        ),
        -1,
    )  # (B, S*S, num, 5+C)
    return decoded.reshape(batch, cells * num, 5 + classes)  # (B, S*S, num, 5+C) -> (B, S*S*num, 5+C)
