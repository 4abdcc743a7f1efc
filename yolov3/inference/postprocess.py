"""From decoded rows to final detections: score threshold, then torchvision's non-maximum suppression.

A detection's score is ``objectness * class probability``, and it is kept when the score is above
``conf_threshold`` (Darknet's ``prob > thresh``). With ``multi_label`` every class that passes is emitted
as its own detection of the same box (what Darknet does for mAP evaluation); otherwise only the best class.
NMS is class-aware (``batched_nms``) unless ``class_agnostic``. The result is torchvision's detection
convention: per image a dict with ``boxes`` (K, 4) xyxy, ``scores`` (K,) and ``labels`` (K,) int64, sorted by
decreasing score.

:func:`darknet_postprocess` is Darknet's own output (``get_yolo_detections`` then ``do_nms_sort``, what
``darknet detector test`` prints): a box enters when its objectness passes, each class of it whose
``objectness * probability`` passes is kept (the others are zeroed), and each class is then sorted and
suppressed on its own, with no cap on the count. For every image it gives the same dict.

:func:`detect_rows` applies a :class:`~yolov3.inference.detection_config.DetectionConfig` (which checks the
settings, for both functions): the one entry point of the library's consumers.
"""

from __future__ import annotations

import torch
from torchvision.ops import batched_nms, box_convert, nms

from yolov3.inference.detection_config import OUTPUT_MODES, DetectionConfig

__all__ = ["OUTPUT_MODES", "darknet_postprocess", "detect_rows", "empty_detections", "postprocess", "select_candidates"]


def empty_detections(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """A detection dict with no detections: boxes (0, 4), scores (0,), labels (0,) int64."""
    return {
        "boxes": torch.zeros((0, 4), device=device, dtype=dtype),
        "scores": torch.zeros((0,), device=device, dtype=dtype),
        "labels": torch.zeros((0,), device=device, dtype=torch.int64),
    }


def select_candidates(
    decoded: torch.Tensor, conf_threshold: float, multi_label: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One image's rows (N, 5+C) -> (boxes_cxcywh (K, 4), scores (K,), labels (K,)) whose score passes."""
    objectness = decoded[:, 4]  # (N,)
    # A score obj*cls can only pass if obj passes: drop the rest before the (N, C) product.
    rows = decoded[objectness > conf_threshold]  # (N', 5+C)
    class_scores = rows[:, 4:5] * rows[:, 5:]  # (N', 1) * (N', C) -> (N', C)
    if multi_label:
        row_indices, labels = torch.nonzero(class_scores > conf_threshold, as_tuple=True)  # (K,) each
        scores = class_scores[row_indices, labels]  # (K,)
    else:
        scores, labels = class_scores.max(dim=1)  # (N',) each
        row_indices = torch.nonzero(scores > conf_threshold, as_tuple=True)[0]  # (K,)
        scores, labels = scores[row_indices], labels[row_indices]
    return rows[row_indices, :4], scores, labels


def detect_rows(decoded: torch.Tensor, config: DetectionConfig) -> list[dict[str, torch.Tensor]]:
    """Detections of decoded rows (B, N, 5+C) as ``config`` says: :func:`postprocess` for ``output="standard"``,
    :func:`darknet_postprocess` for ``output="darknet"``."""
    if config.output == "darknet":
        return darknet_postprocess(decoded, config.conf_threshold, config.iou_threshold)
    return postprocess(
        decoded, config.conf_threshold, config.iou_threshold, config.max_detections, config.multi_label,
        config.class_agnostic,
    )  # fmt: skip


def darknet_postprocess(
    decoded: torch.Tensor,
    conf_threshold: float = DetectionConfig.conf_threshold,
    iou_threshold: float = DetectionConfig.iou_threshold,
) -> list[dict[str, torch.Tensor]]:
    """Darknet's detections of decoded rows (B, N, 5+C): every class over the threshold, NMS per class.

    As ``get_yolo_detections``: rows with objectness ``> conf_threshold``, ``prob = objectness * class`` kept
    where ``> conf_threshold``; as ``do_nms_sort``: per class, by decreasing ``prob``, a box suppresses the
    later ones of the class whose IoU is ``> iou_threshold``. Boxes (K, 4) xyxy in network-input pixels.
    """
    if decoded.dim() != 3 or decoded.shape[-1] < 6:
        raise ValueError(f"decoded rows must have shape (B, N, 5+C) with C >= 1, got {tuple(decoded.shape)}")
    DetectionConfig(conf_threshold, iou_threshold, output="darknet")  # checks the values
    results = []
    for image_rows in decoded:  # (N, 5+C)
        boxes_cxcywh, scores, labels = select_candidates(image_rows, conf_threshold, multi_label=True)
        boxes_xyxy = box_convert(boxes_cxcywh, in_fmt="cxcywh", out_fmt="xyxy")  # (K, 4)
        kept = []
        for label in torch.unique(labels).tolist():  # one suppression per class, as do_nms_sort's loop over k
            indices = torch.nonzero(labels == label, as_tuple=True)[0]  # (K_class,)
            kept.append(indices[nms(boxes_xyxy[indices], scores[indices], iou_threshold)])
        if not kept:
            results.append(empty_detections(decoded.device, decoded.dtype))
            continue
        keep = torch.cat(kept)  # (K',)
        keep = keep[torch.argsort(scores[keep], descending=True, stable=True)]
        results.append({"boxes": boxes_xyxy[keep], "scores": scores[keep], "labels": labels[keep]})
    return results


def postprocess(
    decoded: torch.Tensor,
    conf_threshold: float = DetectionConfig.conf_threshold,
    iou_threshold: float = DetectionConfig.iou_threshold,
    max_detections: int = DetectionConfig.max_detections,
    multi_label: bool = DetectionConfig.multi_label,
    class_agnostic: bool = DetectionConfig.class_agnostic,
) -> list[dict[str, torch.Tensor]]:
    """Threshold and NMS decoded rows (B, N, 5+C) from :func:`~yolov3.inference.decode.decode_outputs`.

    Returns one dict per image: ``boxes`` (K, 4) xyxy in network-input pixels, ``scores`` (K,),
    ``labels`` (K,) int64, at most ``max_detections``, highest score first.
    """
    if decoded.dim() != 3 or decoded.shape[-1] < 6:
        raise ValueError(f"decoded rows must have shape (B, N, 5+C) with C >= 1, got {tuple(decoded.shape)}")
    DetectionConfig(conf_threshold, iou_threshold, max_detections, multi_label, class_agnostic)  # checks the values
    results = []
    for image_rows in decoded:  # (N, 5+C)
        boxes_cxcywh, scores, labels = select_candidates(image_rows, conf_threshold, multi_label)
        if scores.numel() == 0:
            results.append(empty_detections(decoded.device, decoded.dtype))
            continue
        boxes_xyxy = box_convert(boxes_cxcywh, in_fmt="cxcywh", out_fmt="xyxy")  # (K, 4)
        if class_agnostic:
            keep = nms(boxes_xyxy, scores, iou_threshold)
        else:
            keep = batched_nms(boxes_xyxy, scores, labels, iou_threshold)
        keep = keep[:max_detections]  # NMS returns indices by decreasing score
        results.append({"boxes": boxes_xyxy[keep], "scores": scores[keep], "labels": labels[keep]})
    return results
