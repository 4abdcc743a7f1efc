"""The YOLOv3 loss: Darknet's assignment, ignore rule and per-part losses, for any set of YOLO heads.

For a batch of B images, with every sum running over all heads::

    box = box_gain * sum over assigned predictions of (2 - w*h) * box_loss(prediction, ground truth) / B
    obj = obj_gain * sum over heads of obj_balance[head] * sum over not-ignored cells of BCE(obj, target) / B
    cls = cls_gain * sum over assigned predictions and classes of BCE(class logit, class target) / B
    total = box + obj + cls

Sums, not means, divided by the number of images: Darknet sums its deltas over the whole batch and divides
the learning rate by the batch size, so this total's gradient is Darknet's. With Adam the scale does not
matter; with SGD, Darknet's learning rates (1e-3 for YOLOv3) fit this normalization. ``w, h`` in the box
weight are the ground truth's, normalized by the input size (small boxes weigh up to 2x).

Objectness targets are 1 at assigned predictions and 0 elsewhere, except that predictions whose decoded
box overlaps any ground truth of their image by an IoU above ``ignore_thresh`` are left out of the sum
(Darknet's rule; assigned predictions are never left out). Class targets are one-hot, smoothed as Darknet's
``label_smooth_eps`` does (1 - eps/2 and eps/2), and count only at assigned predictions.
Everything is computed in float32 whatever the outputs' dtype, so the loss is safe under autocast.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional

from yolov3.loss.box_losses import darknet_box_loss, decode_boxes_xyxy, iou_box_loss
from yolov3.loss.targets import HeadTargets, assign_targets, ignore_mask, pad_boxes_per_image
from yolov3.models.yolo_head import YoloHeadSpec


@dataclass(frozen=True)
class LossConfig:
    """How the YOLOv3 loss is computed; loaded from YAML by ``yolov3.config_loading.load_dataclass``.

    The defaults are YOLOv3 as published (Darknet's original ``yolo_layer.c``): Darknet's box loss, all
    three gains 1 (AlexeyAB's fork calls them ``iou_normalizer``, ``obj_normalizer``, ``cls_normalizer``;
    its yolov4 cfgs use ``iou_normalizer=0.07`` with ``iou_loss=ciou``), ``ignore_thresh=0.7``, one
    anchor per ground truth, no label smoothing, every head's objectness weighted equally.

    - ``box_loss``: "darknet" (BCE on the cell offsets, L2 on log w, h), "giou" or "ciou" (1 - IoU variant
      of the decoded boxes, torchvision.ops).
    - ``ignore_thresh``: a prediction overlapping a ground truth above this IoU gets no "no object" loss.
    - ``assign_thresh``: also assign every anchor whose shape IoU with a ground truth exceeds this, at its
      own head (AlexeyAB's ``iou_thresh``); None assigns only the best anchor.
    - ``label_smoothing``: Darknet's ``label_smooth_eps`` for the class targets.
    - ``obj_balance``: one objectness weight per head (in the model's head order), or None for all 1.
    """

    box_loss: Literal["darknet", "giou", "ciou"] = "darknet"
    box_gain: float = 1.0
    obj_gain: float = 1.0
    cls_gain: float = 1.0
    ignore_thresh: float = 0.7
    assign_thresh: float | None = None
    label_smoothing: float = 0.0
    obj_balance: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        for name in ("box_gain", "obj_gain", "cls_gain"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be at least 0, got {getattr(self, name)}")
        if not 0.0 <= self.ignore_thresh <= 1.0:
            raise ValueError(f"ignore_thresh must be in 0..1, got {self.ignore_thresh}")
        if self.assign_thresh is not None and not 0.0 <= self.assign_thresh <= 1.0:
            raise ValueError(f"assign_thresh must be in 0..1 or None, got {self.assign_thresh}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.obj_balance is not None and (not self.obj_balance or min(self.obj_balance) < 0):
            raise ValueError(f"obj_balance must be non-empty weights of at least 0, got {self.obj_balance}")


@dataclass(frozen=True)
class LossOutput:
    """The loss of one batch: ``total`` (with grad) and its detached parts; ``total = box + obj + cls``."""

    total: Tensor
    box: Tensor
    obj: Tensor
    cls: Tensor
    num_assigned: int  # assigned (image, anchor, cell) predictions over all heads


class YoloLoss(nn.Module):
    """YOLOv3's loss for the heads ``head_specs`` (a model's ``.head_specs``, in its output order).

    ``loss(outputs, targets, input_size)`` takes the model's raw outputs [(B, A*(5+C), H, W), ...], the
    batch's targets (N, 6) as (image index, class, cx, cy, w, h) normalized to 0..1, and the network
    input's (height, width) in pixels, and returns a :class:`LossOutput`.
    """

    def __init__(self, head_specs: Sequence[YoloHeadSpec], config: LossConfig = LossConfig()) -> None:
        super().__init__()
        if not head_specs:
            raise ValueError("YoloLoss needs at least one head spec")
        if len({spec.num_classes for spec in head_specs}) != 1:
            raise ValueError(f"all heads must have the same num_classes, got {[s.num_classes for s in head_specs]}")
        if config.obj_balance is not None and len(config.obj_balance) != len(head_specs):
            raise ValueError(f"obj_balance has {len(config.obj_balance)} weights for {len(head_specs)} heads")
        self.head_specs = list(head_specs)
        self.config = config
        self.num_classes = head_specs[0].num_classes

    def forward(self, outputs: Sequence[Tensor], targets: Tensor, input_size: tuple[int, int]) -> LossOutput:
        batch_size = self._check_inputs(outputs, targets, input_size)
        config = self.config
        targets = targets.detach().to(device=outputs[0].device, dtype=torch.float32)
        grid_sizes = [(output.shape[2], output.shape[3]) for output in outputs]
        assignments = assign_targets(targets, self.head_specs, grid_sizes, input_size, config.assign_thresh)
        ground_truth_xyxy, ground_truth_valid = pad_boxes_per_image(targets, batch_size, input_size)
        balance = config.obj_balance or (1.0,) * len(self.head_specs)

        box_sum = obj_sum = cls_sum = outputs[0].new_zeros((), dtype=torch.float32)
        for output, spec, assigned, weight in zip(outputs, self.head_specs, assignments, balance, strict=True):
            box, obj, cls = self._head_losses(output, spec, assigned, ground_truth_xyxy, ground_truth_valid)
            box_sum, obj_sum, cls_sum = box_sum + box, obj_sum + weight * obj, cls_sum + cls
        box_part = config.box_gain * box_sum / batch_size
        obj_part = config.obj_gain * obj_sum / batch_size
        cls_part = config.cls_gain * cls_sum / batch_size
        return LossOutput(
            total=box_part + obj_part + cls_part,
            box=box_part.detach(),
            obj=obj_part.detach(),
            cls=cls_part.detach(),
            num_assigned=sum(assigned.num_assigned for assigned in assignments),
        )

    def _head_losses(
        self,
        output: Tensor,
        spec: YoloHeadSpec,
        assigned: HeadTargets,
        ground_truth_xyxy: Tensor,
        ground_truth_valid: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Summed (unnormalized) box, objectness and class losses of one head."""
        batch_size, _, grid_height, grid_width = output.shape
        # (B, A*(5+C), H, W) -> (B, A, 5+C, H, W). No permute: slicing and gathering in this layout keep the
        # backward pass to one dense gradient per head, which matters for the loss's share of a training step.
        raw = output.float().reshape(batch_size, spec.num_anchors, 5 + self.num_classes, grid_height, grid_width)
        anchors_wh = torch.tensor(spec.anchors_px, dtype=torch.float32, device=output.device)  # (A, 2)
        stride_xy = torch.tensor([spec.stride, spec.stride], dtype=torch.float32, device=output.device)  # (2,)

        with torch.no_grad():
            ignored = self._ignored(raw, spec, anchors_wh, stride_xy, ground_truth_xyxy, ground_truth_valid)
        cells = (assigned.image_index, assigned.anchor_index, assigned.grid_y, assigned.grid_x)
        obj_target = torch.zeros_like(ignored, dtype=torch.float32)  # (B, A, H, W)
        obj_target[cells] = 1.0
        obj_weight = (~ignored).float()  # (B, A, H, W): assigned predictions are never ignored
        obj_weight[cells] = 1.0
        obj_logits = raw[:, :, 4]  # (B, A, H, W)
        obj_loss = functional.binary_cross_entropy_with_logits(obj_logits, obj_target, reduction="none")
        obj = (obj_loss * obj_weight).sum()

        # (B, A, 5+C, H, W) -> (P, 5+C): the indexed dimensions come first
        selected = raw[assigned.image_index, assigned.anchor_index, :, assigned.grid_y, assigned.grid_x]
        box = (self._box_losses(selected[:, :4], spec, assigned, anchors_wh, stride_xy) * assigned.box_weight).sum()
        smoothing = self.config.label_smoothing
        class_target = torch.full_like(selected[:, 5:], 0.5 * smoothing)  # (P, C)
        class_rows = torch.arange(assigned.num_assigned, device=output.device)
        class_target[class_rows, assigned.class_index] = 1.0 - 0.5 * smoothing
        cls = functional.binary_cross_entropy_with_logits(selected[:, 5:], class_target, reduction="sum")
        return box, obj, cls

    def _ignored(
        self,
        raw: Tensor,
        spec: YoloHeadSpec,
        anchors_wh: Tensor,
        stride_xy: Tensor,
        ground_truth_xyxy: Tensor,
        ground_truth_valid: Tensor,
    ) -> Tensor:
        """(B, A, H, W) True where the prediction's decoded box overlaps a ground truth above ignore_thresh."""
        batch_size, num_anchors, _, grid_height, grid_width = raw.shape
        rows, columns = torch.meshgrid(
            torch.arange(grid_height, device=raw.device), torch.arange(grid_width, device=raw.device), indexing="ij"
        )
        grid_xy = torch.stack([columns, rows], dim=-1).float()  # (H, W, 2)
        anchors_grid = anchors_wh.view(1, num_anchors, 1, 1, 2)  # (A, 2) -> (1, A, 1, 1, 2)
        raw_xywh = raw[:, :, :4].movedim(2, -1)  # (B, A, 4, H, W) -> (B, A, H, W, 4)
        predicted = decode_boxes_xyxy(raw_xywh, grid_xy, anchors_grid, stride_xy, spec.scale_x_y)
        predicted = predicted.reshape(batch_size, -1, 4)  # (B, A, H, W, 4) -> (B, A*H*W, 4)
        ignored = ignore_mask(predicted, ground_truth_xyxy, ground_truth_valid, self.config.ignore_thresh)
        return ignored.view(batch_size, num_anchors, grid_height, grid_width)  # (B, A*H*W) -> (B, A, H, W)

    def _box_losses(
        self, raw_xywh: Tensor, spec: YoloHeadSpec, assigned: HeadTargets, anchors_wh: Tensor, stride_xy: Tensor
    ) -> Tensor:
        """Unweighted box loss (P,) of the assigned predictions' raw box logits (P, 4)."""
        if self.config.box_loss == "darknet":
            return darknet_box_loss(raw_xywh, assigned.offsets_xy, assigned.log_wh, spec.scale_x_y)
        cells_xy = torch.stack([assigned.grid_x, assigned.grid_y], dim=1).float()  # (P, 2)
        anchors = anchors_wh[assigned.anchor_index]  # (P, 2)
        boxes_xyxy = decode_boxes_xyxy(raw_xywh, cells_xy, anchors, stride_xy, spec.scale_x_y)  # (P, 4)
        return iou_box_loss(boxes_xyxy, assigned.boxes_xyxy, self.config.box_loss)

    def _check_inputs(self, outputs: Sequence[Tensor], targets: Tensor, input_size: tuple[int, int]) -> int:
        """Raise ``ValueError`` unless outputs, targets and input size fit the heads; returns the batch size."""
        if len(outputs) != len(self.head_specs):
            raise ValueError(f"got {len(outputs)} outputs for {len(self.head_specs)} heads")
        batch_size = outputs[0].shape[0]
        height, width = input_size
        for number, (output, spec) in enumerate(zip(outputs, self.head_specs, strict=True)):
            expected = (batch_size, spec.out_channels, height // spec.stride, width // spec.stride)
            if tuple(output.shape) != expected or height % spec.stride or width % spec.stride:
                raise ValueError(
                    f"output {number} has shape {tuple(output.shape)}; for input (height, width) {input_size} "
                    f"and stride {spec.stride} expected {expected} (input sides must be multiples of the stride)"
                )
        if targets.dim() != 2 or targets.shape[1] != 6:
            raise ValueError(f"targets must be (N, 6) rows of (image, class, cx, cy, w, h), got {tuple(targets.shape)}")
        if targets.shape[0]:
            image, label = targets[:, 0], targets[:, 1]
            bad = (image < 0) | (image >= batch_size) | (label < 0) | (label >= self.num_classes)
            if bool(bad.any()):
                row = int(bad.nonzero()[0, 0])
                raise ValueError(
                    f"targets row {row} {targets[row].tolist()}: image index must be in 0..{batch_size - 1} "
                    f"and class in 0..{self.num_classes - 1}"
                )
        return batch_size
