"""Decoding raw YOLO head outputs into boxes, exactly as Darknet's ``[yolo]`` layer does.

A head output (B, A*(5+C), H, W) holds, for each anchor ``a`` and grid cell (row, col), the logits
``tx, ty, tw, th, to, tc_1..tc_C``. Darknet (``forward_yolo_layer`` and ``get_yolo_box``) turns them into::

    cx  = (col + sigmoid(tx) * scale_x_y - (scale_x_y - 1) / 2) / W * input_width
    cy  = (row + sigmoid(ty) * scale_x_y - (scale_x_y - 1) / 2) / H * input_height
    w   = exp(tw) * anchor_width        (anchors in input pixels)
    h   = exp(th) * anchor_height
    obj = sigmoid(to),   class probabilities = sigmoid(tc)   (independent logistic, not softmax)

All of it is vectorized tensor arithmetic (the grid comes from ``torch.arange``), so it runs on any device
and traces to ONNX with a dynamic batch. Rows are ordered anchor by anchor, then row-major over the grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from yolov3.models.yolo_head import YoloHeadSpec

if TYPE_CHECKING:
    from yolov3.inference.region_decode import DarknetHeadSpec  # which imports this module


def decode_head(output: torch.Tensor, spec: YoloHeadSpec, input_size: tuple[int, int]) -> torch.Tensor:
    """Decode one head output (B, A*(5+C), H, W) into (B, A*H*W, 5+C).

    Columns: cx, cy, w, h in network-input pixels (``input_size`` is (height, width)), objectness and the
    C class probabilities, both after a sigmoid.
    """
    if output.dim() != 4 or output.shape[1] != spec.out_channels:
        raise ValueError(
            f"head output of shape {tuple(output.shape)} does not fit its spec: expected (B, "
            f"{spec.num_anchors}*(5+{spec.num_classes})={spec.out_channels}, H, W)"
        )
    input_height, input_width = input_size
    num_anchors, num_values = spec.num_anchors, 5 + spec.num_classes
    grid_height, grid_width = output.shape[2], output.shape[3]
    # (B, A*(5+C), H, W) -> (B, A, 5+C, H, W)
    predictions = output.reshape(-1, num_anchors, num_values, grid_height, grid_width)
    # (B, A, 5+C, H, W) -> (B, A, H, W, 5+C)
    predictions = predictions.permute(0, 1, 3, 4, 2)

    rows = torch.arange(grid_height, device=output.device, dtype=output.dtype)
    columns = torch.arange(grid_width, device=output.device, dtype=output.dtype)
    grid_rows, grid_columns = torch.meshgrid(rows, columns, indexing="ij")  # (H, W) each
    # (A, 2) -> (1, A, 1, 1, 2): anchor (width, height) in input pixels
    anchors_px = torch.tensor(spec.anchors_px, device=output.device, dtype=output.dtype)
    anchors_px = anchors_px.reshape(1, num_anchors, 1, 1, 2)

    scale = spec.scale_x_y
    offsets = torch.sigmoid(predictions[..., 0:2]) * scale - (scale - 1.0) / 2.0  # (B, A, H, W, 2)
    centers_x = (grid_columns + offsets[..., 0]) / grid_width * input_width  # (B, A, H, W)
    centers_y = (grid_rows + offsets[..., 1]) / grid_height * input_height  # (B, A, H, W)
    centers_xy = torch.stack((centers_x, centers_y), dim=-1)  # (B, A, H, W, 2)
    sizes_wh = torch.exp(predictions[..., 2:4]) * anchors_px  # (B, A, H, W, 2)
    probabilities = torch.sigmoid(predictions[..., 4:])  # (B, A, H, W, 1+C): objectness, classes
    decoded = torch.cat((centers_xy, sizes_wh, probabilities), dim=-1)  # (B, A, H, W, 5+C)
    # (B, A, H, W, 5+C) -> (B, A*H*W, 5+C)
    return decoded.reshape(-1, num_anchors * grid_height * grid_width, num_values)


def decode_outputs(
    outputs: list[torch.Tensor], specs: Sequence[YoloHeadSpec | DarknetHeadSpec], input_size: tuple[int, int]
) -> torch.Tensor:
    """Decode every head and concatenate them in order: (B, N, 5+C) with N = sum of A*H*W over heads.

    A spec with a ``decode(output, input_size)`` method of its own (a [region], [Gaussian_yolo] or
    new_coords [yolo] head: :class:`~yolov3.inference.region_decode.DarknetHeadSpec`) decodes its head itself.
    """
    if len(outputs) != len(specs):
        raise ValueError(f"{len(outputs)} head outputs but {len(specs)} head specs; they must pair up one to one")
    classes = {spec.num_classes for spec in specs}
    if len(classes) != 1:
        raise ValueError(f"all heads must have the same number of classes, got {sorted(classes)}")
    decoded = [
        spec.decode(output, input_size) if hasattr(spec, "decode") else decode_head(output, spec, input_size)
        for output, spec in zip(outputs, specs, strict=True)
    ]
    return torch.cat(decoded, 1)
