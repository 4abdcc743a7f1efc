"""Box regression for YOLOv3: Darknet's decoding of the raw box logits, and the three box losses.

Darknet decodes a prediction at cell (gx, gy) with anchor (aw, ah) as

    cx = (gx + s * sigmoid(tx) - (s - 1) / 2) * stride      cy likewise
    w  = aw * exp(tw)                                        h likewise

with ``s`` the head's ``scale_x_y`` (1 for YOLOv3). The loss keeps its own copy of these formulas so that
it does not depend on the inference code.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor
from torch.nn import functional
from torchvision.ops import box_convert, complete_box_iou_loss, generalized_box_iou_loss

# Bound on tw, th before exp() when decoding boxes: e^10 times an anchor is far beyond any input, and the
# bound keeps extreme logits from overflowing to inf (and the IoU losses from turning NaN).
MAX_LOG_SCALE = 10.0


def decode_boxes_xyxy(
    raw_xywh: Tensor, grid_xy: Tensor, anchors_wh: Tensor, stride_xy: Tensor, scale_x_y: float = 1.0
) -> Tensor:
    """Raw logits (..., 4) (tx, ty, tw, th) -> boxes (..., 4) as (x1, y1, x2, y2) in input pixels.

    ``grid_xy`` (..., 2) holds each prediction's cell (gx, gy), ``anchors_wh`` (..., 2) its anchor in
    pixels and ``stride_xy`` (2,) the head's stride in x and y; all broadcast against ``raw_xywh``.
    """
    offsets = scale_x_y * torch.sigmoid(raw_xywh[..., :2]) - 0.5 * (scale_x_y - 1.0)  # (..., 2)
    centres = (grid_xy + offsets) * stride_xy  # (..., 2)
    sizes = anchors_wh * torch.exp(raw_xywh[..., 2:4].clamp(-MAX_LOG_SCALE, MAX_LOG_SCALE))  # (..., 2)
    return box_convert(torch.cat([centres, sizes], dim=-1), in_fmt="cxcywh", out_fmt="xyxy")


def darknet_box_loss(raw_xywh: Tensor, offsets_xy: Tensor, log_wh: Tensor, scale_x_y: float = 1.0) -> Tensor:
    """Darknet's box loss per assigned prediction: raw (P, 4), targets (P, 2) and (P, 2) -> (P,).

    x, y: binary cross-entropy with logits between ``sigmoid(tx)`` and the centre's offset in its cell.
    With ``scale_x_y = s`` the decoded offset is ``s * sigmoid(tx) - (s - 1) / 2``, so the offset target
    ``t`` is mapped to ``(t + (s - 1) / 2) / s`` (still in 0..1); the gradient is then Darknet's delta
    ``decoded - t`` divided by ``s``. w, h: half the squared error of ``tw`` against
    ``log(gt_w / anchor_w)``, whose gradient is exactly Darknet's delta ``tw - log(gt_w / anchor_w)``.
    (Darknet's x, y delta, ``sigmoid(tx) - t`` on the logit, is likewise the gradient of this BCE.)
    The BCE part does not reach 0 at a perfect fit: its floor is the entropy of the offset targets.
    """
    targets_xy = (offsets_xy + 0.5 * (scale_x_y - 1.0)) / scale_x_y  # (P, 2) in 0..1
    centre_loss = functional.binary_cross_entropy_with_logits(raw_xywh[:, :2], targets_xy, reduction="none")
    size_loss = 0.5 * (raw_xywh[:, 2:4] - log_wh).square()  # (P, 2)
    return centre_loss.sum(dim=1) + size_loss.sum(dim=1)


def iou_box_loss(predicted_xyxy: Tensor, target_xyxy: Tensor, kind: Literal["giou", "ciou"]) -> Tensor:
    """``1 - GIoU`` or ``1 - CIoU`` (torchvision.ops) between matched boxes (P, 4) and (P, 4) -> (P,)."""
    if kind == "giou":
        return generalized_box_iou_loss(predicted_xyxy, target_xyxy, reduction="none")
    if kind == "ciou":
        return complete_box_iou_loss(predicted_xyxy, target_xyxy, reduction="none")
    raise ValueError(f"unknown IoU box loss {kind!r}; expected 'giou' or 'ciou'")
