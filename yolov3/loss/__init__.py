"""The YOLOv3 training loss: Darknet's target assignment (:mod:`.targets`), box losses (:mod:`.box_losses`)
and the loss module (:mod:`.yolo_loss`).

``YoloLoss(model.head_specs, LossConfig())(outputs, targets, input_size)`` returns a :class:`LossOutput`.
"""

from yolov3.loss.targets import HeadTargets, anchor_shape_iou, assign_targets, ignore_mask, pad_boxes_per_image
from yolov3.loss.yolo_loss import LossConfig, LossOutput, YoloLoss

__all__ = [
    "HeadTargets",
    "LossConfig",
    "LossOutput",
    "YoloLoss",
    "anchor_shape_iou",
    "assign_targets",
    "ignore_mask",
    "pad_boxes_per_image",
]
