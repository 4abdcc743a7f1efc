"""End to end: the loss trains a tiny YOLOv3 to detect the boxes of two synthetic images almost perfectly."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import box_iou

from yolov3.inference import decode_outputs, postprocess
from yolov3.loss import LossConfig, YoloLoss
from yolov3.models import create_model

INPUT_SIZE = 128
# Per image: boxes (x1, y1, x2, y2) in input pixels and their classes; each class is drawn in its own colour.
BOXES_XYXY = [
    torch.tensor([[10.0, 20.0, 50.0, 70.0], [60.0, 60.0, 120.0, 100.0]]),
    torch.tensor([[30.0, 10.0, 100.0, 50.0], [20.0, 70.0, 44.0, 120.0], [80.0, 80.0, 110.0, 110.0]]),
]
LABELS = [torch.tensor([0, 1]), torch.tensor([2, 0, 1])]
COLOURS = torch.tensor([[1.0, 0.2, 0.2], [0.2, 1.0, 0.2], [0.2, 0.2, 1.0]])


def synthetic_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Two grey images with filled rectangles, and their targets (N, 6): (image, class, cx, cy, w, h) in 0..1."""
    images = torch.full((2, 3, INPUT_SIZE, INPUT_SIZE), 0.5)
    rows = []
    for image_index, (boxes_xyxy, labels) in enumerate(zip(BOXES_XYXY, LABELS, strict=True)):
        for (x1, y1, x2, y2), label in zip(boxes_xyxy.int().tolist(), labels.tolist(), strict=True):
            images[image_index, :, y1:y2, x1:x2] = COLOURS[label][:, None, None]
            centre_x, centre_y, width, height = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
            rows.append([image_index, label, centre_x, centre_y, width, height])
    targets = torch.tensor(rows)
    targets[:, 2:] /= INPUT_SIZE
    return images, targets


@pytest.mark.slow
@pytest.mark.parametrize("box_loss", ["darknet", "giou", "ciou"])
def test_tiny_model_overfits_two_images(box_loss):
    torch.manual_seed(0)
    # bn_momentum 0.1 so that eval-mode batch-norm statistics settle within the few steps.
    model = create_model("yolov3_tiny_test", num_classes=3, width_multiple=1 / 8, bn_momentum=0.1)
    loss = YoloLoss(model.head_specs, LossConfig(box_loss=box_loss))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    images, targets = synthetic_batch()
    losses = []
    for _ in range(150):
        result = loss(model(images), targets, (INPUT_SIZE, INPUT_SIZE))
        optimizer.zero_grad()
        result.total.backward()
        optimizer.step()
        losses.append(result.total.item())
    assert result.num_assigned == 5
    assert losses[-1] < losses[0] / 20, f"loss went from {losses[0]:.2f} to {losses[-1]:.2f}"

    model.eval()
    with torch.no_grad():
        decoded = decode_outputs(model(images), model.head_specs, (INPUT_SIZE, INPUT_SIZE))
    detections = postprocess(decoded, conf_threshold=0.5, iou_threshold=0.45)
    for image_index, found in enumerate(detections):
        ground_truth, labels = BOXES_XYXY[image_index], LABELS[image_index]
        assert len(found["boxes"]) == len(ground_truth), f"image {image_index}: {found}"
        iou = box_iou(ground_truth, found["boxes"])  # (ground truths, detections)
        same_class = labels[:, None] == found["labels"][None, :]
        best_iou = (iou * same_class).max(dim=1).values
        assert (best_iou >= 0.7).all(), f"image {image_index}: best IoU per box {best_iou.tolist()}"
