"""Decoding raw heads against hand-computed Darknet [yolo] arithmetic, and Darknet vs native models."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from yolov3.darknet.cfg import parse_cfg_text
from yolov3.inference.decode import decode_head, decode_outputs
from yolov3.inference.predictor import model_head_specs
from yolov3.models import Darknet, YoloHeadSpec, yolov3_test, yolov3_tiny_test


def logit(probability: float) -> float:
    return math.log(probability / (1.0 - probability))


def head_output(
    values: dict[tuple[int, int, int, int], float], num_anchors: int, num_classes: int, grid_hw
) -> torch.Tensor:
    """A (1, A*(5+C), H, W) head output, zero except ``values[(anchor, channel, row, col)]``."""
    output = torch.zeros(1, num_anchors, 5 + num_classes, *grid_hw, dtype=torch.float64)
    for (anchor, channel, row, column), value in values.items():
        output[0, anchor, channel, row, column] = value
    # (1, A, 5+C, H, W) -> (1, A*(5+C), H, W)
    return output.reshape(1, num_anchors * (5 + num_classes), *grid_hw)


def test_one_anchor_two_by_two_grid_by_hand() -> None:
    # Input 64x64, grid 2x2 (stride 32), one anchor of 10x20 px, one class.
    spec = YoloHeadSpec(anchors_px=((10.0, 20.0),), stride=32, num_classes=1)
    # Cell (row 1, col 0): sigmoid(tx)=0.5, sigmoid(ty)=0.75, exp(tw)=2, exp(th)=1, obj=0.5, cls=0.25.
    values = {(0, 0, 1, 0): 0.0, (0, 1, 1, 0): math.log(3.0), (0, 2, 1, 0): math.log(2.0), (0, 3, 1, 0): 0.0}
    values |= {(0, 4, 1, 0): 0.0, (0, 5, 1, 0): logit(0.25)}
    # Cell (row 0, col 1): sigmoid(tx)=0.2, sigmoid(ty)=0.9, exp(tw)=0.5, exp(th)=3, obj=0.8, cls=0.6.
    values |= {(0, 0, 0, 1): logit(0.2), (0, 1, 0, 1): logit(0.9), (0, 2, 0, 1): math.log(0.5)}
    values |= {(0, 3, 0, 1): math.log(3.0), (0, 4, 0, 1): logit(0.8), (0, 5, 0, 1): logit(0.6)}
    decoded = decode_head(head_output(values, 1, 1, (2, 2)), spec, (64, 64))
    assert decoded.shape == (1, 4, 6)
    # Rows are row-major over the grid: (0,0), (0,1), (1,0), (1,1).
    # (row 1, col 0): cx = (0 + 0.5) / 2 * 64 = 16, cy = (1 + 0.75) / 2 * 64 = 56, w = 2 * 10, h = 1 * 20.
    torch.testing.assert_close(decoded[0, 2], torch.tensor([16.0, 56.0, 20.0, 20.0, 0.5, 0.25], dtype=torch.float64))
    # (row 0, col 1): cx = (1 + 0.2) / 2 * 64 = 38.4, cy = (0 + 0.9) / 2 * 64 = 28.8, w = 5, h = 60.
    torch.testing.assert_close(decoded[0, 1], torch.tensor([38.4, 28.8, 5.0, 60.0, 0.8, 0.6], dtype=torch.float64))
    # (row 0, col 0), all logits 0: the cell centre, anchor size, 0.5 probabilities.
    torch.testing.assert_close(decoded[0, 0], torch.tensor([16.0, 16.0, 10.0, 20.0, 0.5, 0.5], dtype=torch.float64))


def test_scale_x_y_stretches_the_offset_around_the_cell_centre() -> None:
    spec = YoloHeadSpec(anchors_px=((10.0, 20.0),), stride=32, num_classes=1, scale_x_y=1.2)
    values = {(0, 0, 1, 1): logit(0.2), (0, 1, 1, 1): logit(0.75)}
    decoded = decode_head(head_output(values, 1, 1, (2, 2)), spec, (64, 64))
    # offset = sigmoid * 1.2 - 0.1: x: 0.2*1.2-0.1 = 0.14, y: 0.75*1.2-0.1 = 0.8.
    # cx = (1 + 0.14) / 2 * 64 = 36.48, cy = (1 + 0.8) / 2 * 64 = 57.6.
    torch.testing.assert_close(decoded[0, 3, :2], torch.tensor([36.48, 57.6], dtype=torch.float64))
    # sigmoid 0.5 stays at the cell centre whatever the scale.
    torch.testing.assert_close(decoded[0, 0, :2], torch.tensor([16.0, 16.0], dtype=torch.float64))


def test_non_square_input_uses_width_and_height_separately() -> None:
    # Input (height 64, width 96): grid 2 rows x 3 columns.
    spec = YoloHeadSpec(anchors_px=((8.0, 8.0),), stride=32, num_classes=2)
    decoded = decode_head(head_output({}, 1, 2, (2, 3)), spec, (64, 96))
    assert decoded.shape == (1, 6, 7)
    centers = decoded[0, :, :2]
    expected = torch.tensor([[16.0, 16.0], [48.0, 16.0], [80.0, 16.0], [16.0, 48.0], [48.0, 48.0], [80.0, 48.0]])
    torch.testing.assert_close(centers, expected.double())


def test_anchor_major_ordering_with_several_anchors() -> None:
    anchors_px = ((10.0, 13.0), (16.0, 30.0), (33.0, 23.0))
    spec = YoloHeadSpec(anchors_px=anchors_px, stride=16, num_classes=3)
    # Anchor 1 at (row 0, col 1): objectness 0.9, class 2 probability 0.7.
    values = {(1, 4, 0, 1): logit(0.9), (1, 7, 0, 1): logit(0.7)}
    decoded = decode_head(head_output(values, 3, 3, (2, 2)), spec, (32, 32))
    assert decoded.shape == (1, 12, 8)
    # Row index = anchor * H * W + row * W + col = 1 * 4 + 0 + 1.
    assert decoded[0, :, 4].argmax().item() == 5
    torch.testing.assert_close(decoded[0, 5, 4:], torch.tensor([0.9, 0.5, 0.5, 0.7], dtype=torch.float64))
    # Zero logits: each block of four rows has its own anchor's size.
    for anchor, (width, height) in enumerate(anchors_px):
        block = decoded[0, anchor * 4 : anchor * 4 + 4, 2:4]
        torch.testing.assert_close(block, torch.tensor([[width, height]] * 4, dtype=torch.float64))


def test_decode_outputs_concatenates_heads_in_order_and_keeps_the_batch() -> None:
    model = yolov3_test(num_classes=3).eval()
    images = torch.rand(2, 3, 96, 64)
    with torch.no_grad():
        outputs = model(images)
        decoded = decode_outputs(outputs, model.head_specs, (96, 64))
        singles = [decode_outputs(model(images[i : i + 1]), model.head_specs, (96, 64)) for i in range(2)]
    counts = [3 * output.shape[2] * output.shape[3] for output in outputs]  # strides 32, 16, 8
    assert decoded.shape == (2, sum(counts), 8)
    start = 0
    for output, spec, count in zip(outputs, model.head_specs, counts, strict=True):
        torch.testing.assert_close(decoded[:, start : start + count], decode_head(output, spec, (96, 64)))
        start += count
    torch.testing.assert_close(decoded, torch.cat(singles), rtol=1e-5, atol=1e-4)


def test_decode_rejects_mismatched_heads() -> None:
    spec = YoloHeadSpec(anchors_px=((10.0, 13.0),), stride=32, num_classes=2)
    with pytest.raises(ValueError, match=r"expected \(B, 1\*\(5\+2\)=7, H, W\)"):
        decode_head(torch.zeros(1, 8, 2, 2), spec, (64, 64))
    with pytest.raises(ValueError, match="2 head outputs but 1 head specs"):
        decode_outputs([torch.zeros(1, 7, 2, 2)] * 2, [spec], (64, 64))


def test_darknet_and_native_tiny_decode_the_same(tmp_path: Path) -> None:
    native = yolov3_tiny_test(num_classes=3).eval()
    weights_path = tmp_path / "tiny-test.weights"
    native.save_darknet_weights(weights_path)
    darknet = Darknet(parse_cfg_text(native.to_darknet_cfg_text(), source="tiny-test.cfg"))
    darknet.load_darknet_weights(weights_path)
    darknet.eval()
    assert model_head_specs(darknet) == native.head_specs
    images = torch.rand(2, 3, 128, 160)
    with torch.no_grad():
        decoded_native = decode_outputs(native(images), native.head_specs, (128, 160))
        decoded_darknet = decode_outputs(darknet(images), model_head_specs(darknet), (128, 160))
    assert decoded_native.shape == (2, 3 * (4 * 5 + 8 * 10), 8)
    torch.testing.assert_close(decoded_darknet, decoded_native, rtol=1e-5, atol=1e-4)
