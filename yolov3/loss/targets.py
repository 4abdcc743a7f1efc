"""Darknet's target assignment for YOLOv3, vectorized over all boxes and images of a batch.

A batch's targets are one tensor (N, 6): (image index, class, cx, cy, w, h), box coordinates normalized
to 0..1 by the input's width and height (see :mod:`yolov3.data`). Darknet's rules (``yolo_layer.c``):

- Each ground truth goes to the best of **all** anchors (every head's anchors together) by shape IoU,
  the IoU of the two (w, h) rectangles aligned at their centres; ties go to the first anchor in head order.
  It is assigned only at the head owning that anchor, in the grid cell containing its centre.
- With ``assign_thresh`` (AlexeyAB's ``iou_thresh``), every other anchor whose shape IoU with the ground
  truth exceeds it is assigned too, each at its own head and cell.
- Collisions (two ground truths on the same image, anchor and cell): the later row of ``targets`` wins,
  as Darknet, which writes the deltas truth after truth, ends with the last one.
- Boxes with a zero or negative width or height are dropped.

:func:`ignore_mask` is Darknet's other rule: a prediction whose box overlaps any ground truth of its image
by more than ``ignore_thresh`` is not pushed towards "no object".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.ops import box_convert, box_iou

from yolov3.models.yolo_head import YoloHeadSpec


@dataclass(frozen=True)
class HeadTargets:
    """The assigned predictions of one head: one row per (image, anchor, cell), P rows in all.

    ``offsets_xy`` is the ground-truth centre's position inside its cell (Darknet's ``tx, ty``, 0..1);
    ``log_wh`` is ``log(gt_w / anchor_w), log(gt_h / anchor_h)`` (Darknet's ``tw, th``); ``box_weight``
    is Darknet's ``2 - w*h`` with w, h normalized by the input size; ``target_index`` is the row of the
    batch's targets tensor that each assignment came from.
    """

    image_index: Tensor  # (P,) int64
    anchor_index: Tensor  # (P,) int64, index into this head's anchors
    grid_y: Tensor  # (P,) int64
    grid_x: Tensor  # (P,) int64
    class_index: Tensor  # (P,) int64
    offsets_xy: Tensor  # (P, 2) float32
    log_wh: Tensor  # (P, 2) float32
    boxes_xyxy: Tensor  # (P, 4) float32, input pixels
    box_weight: Tensor  # (P,) float32
    target_index: Tensor  # (P,) int64

    @property
    def num_assigned(self) -> int:
        return int(self.image_index.shape[0])


def targets_to_boxes_xyxy(targets: Tensor, input_size: tuple[int, int]) -> Tensor:
    """Targets (N, 6) with normalized (cx, cy, w, h) -> boxes (N, 4) as (x1, y1, x2, y2) in input pixels."""
    height, width = input_size
    scale = targets.new_tensor([width, height, width, height])
    return box_convert(targets[:, 2:6] * scale, in_fmt="cxcywh", out_fmt="xyxy")


def anchor_shape_iou(boxes_wh: Tensor, anchors_wh: Tensor) -> Tensor:
    """IoU of (w, h) rectangles aligned at their centres: boxes (N, 2) x anchors (A, 2) -> (N, A).

    Aligned at a corner the IoU is the same; :mod:`yolov3.loss.anchors` clusters with it (float64 in, float64 out).
    """
    intersection = torch.minimum(boxes_wh[:, None, :], anchors_wh[None, :, :]).prod(dim=2)  # (N, A)
    union = boxes_wh.prod(dim=1)[:, None] + anchors_wh.prod(dim=1)[None, :] - intersection  # (N, A)
    return intersection / union


def _all_anchors(head_specs: Sequence[YoloHeadSpec], device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Every head's anchors in head order (K, 2) px, the head of each (K,) and its index within the head (K,)."""
    anchors = [anchor for spec in head_specs for anchor in spec.anchors_px]
    heads = [head for head, spec in enumerate(head_specs) for _ in spec.anchors_px]
    local = [index for spec in head_specs for index in range(spec.num_anchors)]
    return (
        torch.tensor(anchors, dtype=torch.float32, device=device),
        torch.tensor(heads, dtype=torch.long, device=device),
        torch.tensor(local, dtype=torch.long, device=device),
    )


def assign_targets(
    targets: Tensor,
    head_specs: Sequence[YoloHeadSpec],
    grid_sizes: Sequence[tuple[int, int]],
    input_size: tuple[int, int],
    assign_thresh: float | None = None,
) -> list[HeadTargets]:
    """Assign the batch's ground truths (N, 6) to anchors and cells; one :class:`HeadTargets` per head.

    ``grid_sizes`` holds each head's (height, width) in cells, ``input_size`` the network input's
    (height, width) in pixels. Anchors and their order come from ``head_specs``.
    """
    device = targets.device
    targets = targets.float()
    targets = targets[(targets[:, 4] > 0) & (targets[:, 5] > 0)]  # (N, 6), degenerate boxes dropped
    height, width = input_size
    boxes_wh = targets[:, 4:6] * targets.new_tensor([width, height])  # (N, 2) input pixels
    anchors_wh, anchor_head, anchor_local = _all_anchors(head_specs, device)
    shape_iou = anchor_shape_iou(boxes_wh, anchors_wh)  # (N, K)
    # Best of all anchors (argmax keeps the first of equals), plus every anchor above assign_thresh.
    selected = torch.zeros_like(shape_iou, dtype=torch.bool)  # (N, K)
    selected[torch.arange(targets.shape[0], device=device), shape_iou.argmax(dim=1)] = True
    if assign_thresh is not None:
        selected |= shape_iou > assign_thresh
    target_rows, anchor_rows = selected.nonzero(as_tuple=True)  # (P_all,) each, ordered by target row
    boxes_xyxy = targets_to_boxes_xyxy(targets, input_size)  # (N, 4)
    box_weight = 2.0 - targets[:, 4] * targets[:, 5]  # (N,)

    assignments = []
    for head, (spec, (grid_height, grid_width)) in enumerate(zip(head_specs, grid_sizes, strict=True)):
        here = anchor_head[anchor_rows] == head
        rows, anchors = target_rows[here], anchor_rows[here]  # (P,), (P,) indices into targets / all anchors
        cell_xy = targets[rows, 2:4] * targets.new_tensor([grid_width, grid_height])  # (P, 2) in cells
        grid_x = cell_xy[:, 0].floor().long().clamp(0, grid_width - 1)
        grid_y = cell_xy[:, 1].floor().long().clamp(0, grid_height - 1)
        image_index = targets[rows, 0].long()
        anchor_index = anchor_local[anchors]
        # Collisions: keep, for each (image, anchor, cell), the assignment from the last target row.
        cell_key = ((image_index * spec.num_anchors + anchor_index) * grid_height + grid_y) * grid_width + grid_x
        last_row = torch.full_like(cell_key, -1).scatter_reduce(0, _dense_key(cell_key), rows, reduce="amax")
        keep = last_row[_dense_key(cell_key)] == rows  # (P,)
        offsets_xy = cell_xy - torch.stack([grid_x, grid_y], dim=1).float()  # (P, 2)
        assignments.append(
            HeadTargets(
                image_index=image_index[keep],
                anchor_index=anchor_index[keep],
                grid_y=grid_y[keep],
                grid_x=grid_x[keep],
                class_index=targets[rows[keep], 1].long(),
                offsets_xy=offsets_xy[keep].clamp(0.0, 1.0),
                log_wh=torch.log(boxes_wh[rows[keep]] / anchors_wh[anchors[keep]]),
                boxes_xyxy=boxes_xyxy[rows[keep]],
                box_weight=box_weight[rows[keep]],
                target_index=rows[keep],
            )
        )
    return assignments


def _dense_key(cell_key: Tensor) -> Tensor:
    """Cell keys (P,) renumbered 0..P-1 (equal keys share a number), so scatters need only P slots."""
    return torch.unique(cell_key, return_inverse=True)[1]


def pad_boxes_per_image(targets: Tensor, batch_size: int, input_size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Each image's ground-truth boxes, padded: (B, M, 4) xyxy input pixels and a (B, M) validity mask.

    M is the largest number of boxes in one image (0 when the batch has none).
    """
    targets = targets.float()
    image_index = targets[:, 0].long()
    order = torch.argsort(image_index, stable=True)  # (N,)
    sorted_images = image_index[order]
    counts = torch.bincount(image_index, minlength=batch_size)  # (B,)
    starts = counts.cumsum(0) - counts  # (B,) first slot of each image in the sorted order
    slot = torch.arange(targets.shape[0], device=targets.device) - starts[sorted_images]  # (N,)
    most = int(counts.max()) if targets.shape[0] else 0
    boxes = targets.new_zeros(batch_size, most, 4)
    valid = torch.zeros(batch_size, most, dtype=torch.bool, device=targets.device)
    boxes[sorted_images, slot] = targets_to_boxes_xyxy(targets, input_size)[order]
    valid[sorted_images, slot] = True
    return boxes, valid


def ignore_mask(
    predicted_xyxy: Tensor, ground_truth_xyxy: Tensor, ground_truth_valid: Tensor, ignore_thresh: float
) -> Tensor:
    """Darknet's ignore rule: (B, P) True where a predicted box overlaps any ground truth of its image.

    ``predicted_xyxy`` (B, P, 4) and ``ground_truth_xyxy`` (B, M, 4) are in the same pixels;
    ``ground_truth_valid`` (B, M) masks the padding. "Overlaps" means IoU strictly above ``ignore_thresh``.
    """
    batch_size, num_predictions = predicted_xyxy.shape[:2]
    if ground_truth_xyxy.shape[1] == 0 or ignore_thresh >= 1.0:  # an IoU never exceeds 1
        return torch.zeros(batch_size, num_predictions, dtype=torch.bool, device=predicted_xyxy.device)
    iou = torch.vmap(box_iou)(predicted_xyxy.float(), ground_truth_xyxy.float())  # (B, P, M)
    overlaps = (iou > ignore_thresh) & ground_truth_valid[:, None, :]  # (B, P, M); NaN (empty boxes) is False
    return overlaps.any(dim=2)
