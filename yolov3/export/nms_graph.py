"""Decoding, score threshold and NMS as one traceable module with fixed-shape outputs, for deployment graphs.

:class:`DetectionPostprocess` takes the raw heads (B, A*(5+C), H/s, W/s) and returns, for a batch of B images,

- ``boxes`` (B, M, 4) xyxy in network-input pixels, ``scores`` (B, M), ``labels`` (B, M) int64 and
  ``num_detections`` (B,) int64, with ``M = max_detections``; each image's detections fill its first slots,
  highest score first, and the remaining slots hold zeros and label -1.

These are the detections of :func:`~yolov3.inference.postprocess.postprocess` with its defaults (best class
only, class-aware NMS): it decodes with :func:`~yolov3.inference.decode.decode_outputs`, keeps rows whose
best ``objectness * class probability`` passes ``conf_threshold``, and runs torchvision's ``batched_nms`` on
the whole batch at once, grouped by (image, class), which the TorchScript ONNX exporter turns into one
``NonMaxSuppression``. Every shape but the batch is fixed, so the graph batches like any other.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchvision.ops import batched_nms, box_convert

from yolov3.inference.decode import decode_outputs
from yolov3.inference.detection_config import DetectionConfig
from yolov3.inference.region_decode import DarknetHeadSpec
from yolov3.models.yolo_head import YoloHeadSpec

PADDING_LABEL = -1


# The graph's settings are the library's one DetectionConfig (checked there): score threshold, NMS IoU threshold
# and detections kept per image. The graph computes its standard output: best class, class-aware NMS.
NmsOptions = DetectionConfig


def check_graph_options(options: DetectionConfig) -> None:
    """Refuse the settings the NMS graph does not compute, naming them (``ValueError``)."""
    unsupported = {
        name: value
        for name, value, supported in (
            ("multi_label", options.multi_label, False),
            ("class_agnostic", options.class_agnostic, False),
            ("output", options.output, "standard"),
        )
        if value != supported
    }
    if unsupported:
        given = ", ".join(f"{name}={value!r}" for name, value in unsupported.items())
        raise ValueError(
            f"the NMS graph computes the standard output (best class per box, class-aware NMS); got {given}"
        )


class DetectionPostprocess(nn.Module):
    """Raw heads -> fixed-shape detections; ``forward(*heads)`` returns (boxes, scores, labels, num_detections)."""

    def __init__(
        self, head_specs: Sequence[YoloHeadSpec | DarknetHeadSpec], input_size: tuple[int, int], options: NmsOptions
    ) -> None:
        super().__init__()
        check_graph_options(options)
        self.head_specs = list(head_specs)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.options = options
        self.num_classes = self.head_specs[0].num_classes

    def forward(self, *heads: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        batch_size = heads[0].shape[0]
        max_detections = self.options.max_detections
        decoded = decode_outputs(list(heads), self.head_specs, self.input_size)  # (B, N, 5+C)
        rows_per_image = decoded.shape[1]
        class_scores = decoded[..., 4:5] * decoded[..., 5:]  # (B, N, 1) * (B, N, C) -> (B, N, C)
        best_scores, best_labels = class_scores.max(dim=2)  # (B, N) each
        # (B, N) -> (B*N,): the rows of all images in one list, so that one NMS call serves the whole batch
        flat_scores, flat_labels = best_scores.reshape(-1), best_labels.reshape(-1)
        candidates = torch.nonzero(flat_scores > self.options.conf_threshold).reshape(-1)  # (K, 1) -> (K,)
        image_indices = torch.div(candidates, rows_per_image, rounding_mode="floor")  # (K,)
        # (B, N, 4) -> (B*N, 4), then the candidates' boxes (K, 4) as xyxy
        boxes_xyxy = box_convert(decoded[..., :4].reshape(-1, 4)[candidates], in_fmt="cxcywh", out_fmt="xyxy")
        scores, labels = flat_scores[candidates], flat_labels[candidates]  # (K,) each
        # NMS within each (image, class) group; the kept indices come by decreasing score.
        keep = batched_nms(boxes_xyxy, scores, image_indices * self.num_classes + labels, self.options.iou_threshold)
        kept_images = image_indices[keep]  # (D,)
        # Rank of each kept detection among its own image's, 0 for the best: a running count per image.
        image_ids = torch.arange(batch_size, device=heads[0].device)
        membership = kept_images[:, None] == image_ids[None, :]  # (D, 1) == (1, B) -> (D, B)
        running_counts = torch.cumsum(membership.to(torch.int64), dim=0)  # (D, B)
        ranks = (running_counts * membership).sum(dim=1) - 1  # (D,)
        fits = ranks < max_detections
        slots = (kept_images * max_detections + ranks)[fits]  # (D',): indices into the B*M output slots
        kept = keep[fits]  # (D',)
        slot_count = batch_size * max_detections
        output_boxes = boxes_xyxy.new_zeros((slot_count, 4)).scatter(0, slots[:, None].expand(-1, 4), boxes_xyxy[kept])
        output_scores = scores.new_zeros((slot_count,)).scatter(0, slots, scores[kept])
        output_labels = torch.full_like(output_scores, PADDING_LABEL, dtype=torch.int64).scatter(0, slots, labels[kept])
        num_detections = membership.sum(dim=0).clamp(max=max_detections)  # (B,)
        return (
            output_boxes.reshape(batch_size, max_detections, 4),  # (B*M, 4) -> (B, M, 4)
            output_scores.reshape(batch_size, max_detections),  # (B*M,) -> (B, M)
            output_labels.reshape(batch_size, max_detections),  # (B*M,) -> (B, M)
            num_detections,
        )


class DetectionGraph(nn.Module):
    """A detector followed by :class:`DetectionPostprocess`: images (B, 3, H, W) -> fixed-shape detections."""

    def __init__(self, model: nn.Module, postprocess: DetectionPostprocess) -> None:
        super().__init__()
        self.model = model
        self.postprocess = postprocess

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.postprocess(*self.model(images))
