"""The YOLOv3 loss against hand computations: assignment, targets, ignore rule, loss values and gradients."""

from __future__ import annotations

import math

import pytest
import torch

from yolov3.config_loading import ConfigError, load_dataclass
from yolov3.loss import LossConfig, LossOutput, YoloLoss, anchor_shape_iou, assign_targets, ignore_mask
from yolov3.loss.box_losses import darknet_box_loss
from yolov3.loss.targets import pad_boxes_per_image
from yolov3.models import YoloHeadSpec, create_model

# Two heads on a 128x128 input: stride 32 (4x4 cells) and stride 16 (8x8 cells), two classes.
LARGE = YoloHeadSpec(anchors_px=((60.0, 60.0), (100.0, 40.0)), stride=32, num_classes=2)
MEDIUM = YoloHeadSpec(anchors_px=((20.0, 20.0), (10.0, 30.0)), stride=16, num_classes=2)
HEADS = [LARGE, MEDIUM]
INPUT_SIZE = (128, 128)
CHANNELS = 5 + 2  # per anchor: tx, ty, tw, th, obj, two classes

# Box 1: image 0, class 1, centre (44, 20) px, 24x18 px. Shape IoUs: (20,20) 360/472, (10,30) 180/552,
# (60,60) 432/3600, (100,40) 432/4000 -> best is MEDIUM's anchor 0; cell x 44/16 = 2.75, y 20/16 = 1.25.
# Box 2: image 1, class 0, centre (52, 72) px, 90x40 px. Shape IoUs: (100,40) 3600/4000 (best),
# (60,60) 2400/4800 -> LARGE's anchor 1; cell x 52/32 = 1.625, y 72/32 = 2.25.
TARGETS = torch.tensor(
    [
        [0, 1, 44 / 128, 20 / 128, 24 / 128, 18 / 128],
        [1, 0, 52 / 128, 72 / 128, 90 / 128, 40 / 128],
    ]
)


def bce(logit: float, target: float) -> float:
    """Binary cross-entropy of sigmoid(logit) against target, by the textbook formula."""
    probability = 1 / (1 + math.exp(-logit))
    return -(target * math.log(probability) + (1 - target) * math.log(1 - probability))


def zero_outputs(batch_size: int = 2) -> list[torch.Tensor]:
    return [torch.zeros(batch_size, spec.out_channels, 128 // spec.stride, 128 // spec.stride) for spec in HEADS]


def set_prediction(output: torch.Tensor, image: int, anchor: int, cell_yx: tuple[int, int], values: list) -> None:
    """Write raw values (tx, ty, tw, th, obj, classes...) of one anchor at one cell of a (B, A*(5+C), H, W) output."""
    start = anchor * CHANNELS
    output[image, start : start + len(values), cell_yx[0], cell_yx[1]] = torch.tensor(values)


def test_anchor_shape_iou_by_hand():
    iou = anchor_shape_iou(torch.tensor([[24.0, 18.0]]), torch.tensor([[20.0, 20.0], [10.0, 30.0], [100.0, 40.0]]))
    torch.testing.assert_close(iou, torch.tensor([[360 / 472, 180 / 552, 432 / 4000]]))
    # float64 (the anchors CLI's k-means): an identical shape is exactly 1, a 5x20 anchor on 10x10 is 50/150.
    iou = anchor_shape_iou(torch.tensor([[10.0, 10.0]]).double(), torch.tensor([[10.0, 10.0], [5.0, 20.0]]).double())
    assert iou.dtype == torch.float64 and iou.tolist() == [[1.0, 50 / 150]]


def test_assignment_and_targets_by_hand():
    large, medium = assign_targets(TARGETS, HEADS, [(4, 4), (8, 8)], INPUT_SIZE)
    # Box 1 goes to the stride-16 head only; box 2 to the stride-32 head only.
    assert (large.image_index.tolist(), large.anchor_index.tolist()) == ([1], [1])
    assert (large.grid_y.tolist(), large.grid_x.tolist()) == ([2], [1])
    assert (medium.image_index.tolist(), medium.anchor_index.tolist()) == ([0], [0])
    assert (medium.grid_y.tolist(), medium.grid_x.tolist()) == ([1], [2])
    assert large.class_index.tolist() == [0] and medium.class_index.tolist() == [1]
    assert large.target_index.tolist() == [1] and medium.target_index.tolist() == [0]
    torch.testing.assert_close(large.offsets_xy, torch.tensor([[0.625, 0.25]]))
    torch.testing.assert_close(medium.offsets_xy, torch.tensor([[0.75, 0.25]]))
    torch.testing.assert_close(large.log_wh, torch.tensor([[math.log(90 / 100), 0.0]]))
    torch.testing.assert_close(medium.log_wh, torch.tensor([[math.log(24 / 20), math.log(18 / 20)]]))
    torch.testing.assert_close(large.boxes_xyxy, torch.tensor([[7.0, 52.0, 97.0, 92.0]]))
    torch.testing.assert_close(large.box_weight, torch.tensor([2 - (90 / 128) * (40 / 128)]))
    torch.testing.assert_close(medium.box_weight, torch.tensor([2 - (24 / 128) * (18 / 128)]))


def test_best_of_all_anchors_goes_to_the_stride16_head():
    specs = create_model("yolov3_test", num_classes=3).head_specs  # COCO anchors; strides 32, 16, 8
    assert [spec.stride for spec in specs] == [32, 16, 8]
    # 30x61 px is exactly COCO anchor 3, the first anchor of the stride-16 head; centre (200, 100) px.
    targets = torch.tensor([[0, 2, 200 / 416, 100 / 416, 30 / 416, 61 / 416]])
    heads = assign_targets(targets, specs, [(13, 13), (26, 26), (52, 52)], (416, 416))
    assert [head.num_assigned for head in heads] == [0, 1, 0]
    middle = heads[1]
    assert (middle.anchor_index.item(), middle.grid_y.item(), middle.grid_x.item()) == (0, 100 // 16, 200 // 16)
    torch.testing.assert_close(middle.log_wh, torch.zeros(1, 2))


def test_non_square_input_uses_height_then_width():
    # Input 64 high, 128 wide: the stride-32 head is 2x4 cells. Centre (100, 40) px -> cell x 3, y 1.
    targets = torch.tensor([[0, 0, 100 / 128, 40 / 64, 90 / 128, 40 / 64]])
    large, medium = assign_targets(targets, HEADS, [(2, 4), (4, 8)], (64, 128))
    assert (large.grid_y.tolist(), large.grid_x.tolist(), medium.num_assigned) == ([1], [3], 0)
    torch.testing.assert_close(large.offsets_xy, torch.tensor([[100 / 32 - 3, 40 / 32 - 1]]))
    torch.testing.assert_close(large.log_wh, torch.tensor([[math.log(0.9), 0.0]]))


def test_collision_last_target_wins():
    # Two boxes of image 0 on the same cell with the same best anchor; the later row is kept.
    targets = torch.tensor([[0, 0, 0.30, 0.30, 0.15, 0.15], [0, 1, 0.31, 0.32, 0.16, 0.16]])
    large, medium = assign_targets(targets, HEADS, [(4, 4), (8, 8)], INPUT_SIZE)
    assert large.num_assigned == 0 and medium.num_assigned == 1
    assert medium.target_index.tolist() == [1] and medium.class_index.tolist() == [1]


def test_assign_thresh_adds_every_anchor_above_it_at_its_own_head():
    box = TARGETS[:1]  # shape IoUs 0.763 (MEDIUM 0), 0.326 (MEDIUM 1), 0.12 (LARGE 0), 0.108 (LARGE 1)
    large, medium = assign_targets(box, HEADS, [(4, 4), (8, 8)], INPUT_SIZE, assign_thresh=0.11)
    assert large.anchor_index.tolist() == [0] and medium.anchor_index.tolist() == [0, 1]
    assert (large.grid_y.tolist(), large.grid_x.tolist()) == ([0], [1])  # centre (44, 20) / 32
    torch.testing.assert_close(large.log_wh, torch.tensor([[math.log(24 / 60), math.log(18 / 60)]]))
    large, medium = assign_targets(box, HEADS, [(4, 4), (8, 8)], INPUT_SIZE, assign_thresh=0.9)
    assert large.num_assigned == 0 and medium.anchor_index.tolist() == [0]  # the best anchor always


def test_degenerate_boxes_are_dropped():
    targets = torch.tensor([[0, 0, 0.5, 0.5, 0.0, 0.2], [0, 0, 0.5, 0.5, 0.2, -0.1]])
    assert [head.num_assigned for head in assign_targets(targets, HEADS, [(4, 4), (8, 8)], INPUT_SIZE)] == [0, 0]


def test_pad_boxes_per_image_keeps_order_and_masks_padding():
    targets = torch.tensor([[1, 0, 0.5, 0.5, 0.5, 0.5], [0, 0, 0.25, 0.25, 0.5, 0.5], [1, 1, 0.75, 0.75, 0.5, 0.5]])
    boxes, valid = pad_boxes_per_image(targets, batch_size=3, input_size=(100, 200))
    assert valid.tolist() == [[True, False], [True, True], [False, False]]
    torch.testing.assert_close(boxes[1], torch.tensor([[50.0, 25.0, 150.0, 75.0], [100.0, 50.0, 200.0, 100.0]]))
    torch.testing.assert_close(boxes[0, 0], torch.tensor([0.0, 0.0, 100.0, 50.0]))
    empty_boxes, empty_valid = pad_boxes_per_image(torch.zeros(0, 6), batch_size=2, input_size=(64, 64))
    assert empty_boxes.shape == (2, 0, 4) and empty_valid.shape == (2, 0)


def test_ignore_mask_by_hand():
    ground_truth = torch.tensor([[[7.0, 52.0, 97.0, 92.0], [0.0, 0.0, 0.0, 0.0]], [[0.0, 0.0, 10.0, 10.0]] * 2])
    valid = torch.tensor([[True, False], [True, False]])
    predicted = torch.tensor(
        [
            [
                [7.0, 54.0, 97.0, 90.0],  # IoU 90*36 / 90*40 = 0.9 with image 0's box: ignored
                [35.0, 60.0, 125.0, 100.0],  # IoU 62*32 / (7200 - 62*32) = 0.38: kept
                [0.0, 0.0, 0.0, 0.0],  # zero area, IoU 0 with the box (NaN with the padding): kept
            ],
            [
                [7.0, 54.0, 97.0, 90.0],  # image 1 has only a 10x10 box far away: kept
                [0.0, 0.0, 10.0, 11.0],  # IoU 100/110 = 0.91: ignored
                [0.0, 0.0, 10.0, 20.0],  # IoU 0.5: kept
            ],
        ]
    )
    mask = ignore_mask(predicted, ground_truth, valid, ignore_thresh=0.7)
    assert mask.tolist() == [[True, False, False], [False, True, False]]
    assert not ignore_mask(predicted, ground_truth, valid, ignore_thresh=0.95).any()
    assert not ignore_mask(predicted, ground_truth[:, :0], valid[:, :0], ignore_thresh=0.7).any()


def crafted_outputs() -> list[torch.Tensor]:
    """Hand-set raw outputs for TARGETS; every other value is 0 (sigmoid 0.5, anchor-sized boxes)."""
    large, medium = zero_outputs()
    # Image 1, LARGE anchor 0, cell (2, 1): decodes to centre (52, 72), 90x36 px, IoU 0.9 with box 2 -> ignored.
    set_prediction(large, 1, 0, (2, 1), [math.log(5 / 3), math.log(1 / 3), math.log(1.5), math.log(0.6), 2.0])
    # Image 1, LARGE anchor 0, cell (2, 2): centre (80, 80), 90x40 px, IoU 0.38 with box 2 -> not ignored.
    set_prediction(large, 1, 0, (2, 2), [0.0, 0.0, math.log(1.5), math.log(40 / 60), 0.8])
    # The two assigned predictions.
    set_prediction(large, 1, 1, (2, 1), [0.3, -0.2, 0.1, 0.05, 1.5, 0.4, -0.7])
    set_prediction(medium, 0, 0, (1, 2), [1.0, -1.0, 0.2, -0.1, -0.5, 0.2, 0.9])
    return [large, medium]


def expected_parts(smoothing: float = 0.0) -> tuple[float, float, float]:
    """Summed box, objectness and class losses of crafted_outputs(), by plain math."""
    box_2 = bce(0.3, 0.625) + bce(-0.2, 0.25) + 0.5 * (0.1 - math.log(0.9)) ** 2 + 0.5 * 0.05**2
    box_1 = bce(1.0, 0.75) + bce(-1.0, 0.25) + 0.5 * (0.2 - math.log(1.2)) ** 2 + 0.5 * (-0.1 - math.log(0.9)) ** 2
    box = box_2 * (2 - (90 / 128) * (40 / 128)) + box_1 * (2 - (24 / 128) * (18 / 128))
    cells = 2 * 2 * 4 * 4 + 2 * 2 * 8 * 8  # images x anchors x cells, both heads
    # Zero logits against target 0 everywhere but the 2 assigned, the ignored and the hand-set negative.
    obj = (cells - 4) * math.log(2) + bce(0.8, 0.0) + bce(1.5, 1.0) + bce(-0.5, 1.0)
    high, low = 1 - smoothing / 2, smoothing / 2
    cls = bce(0.4, high) + bce(-0.7, low) + bce(0.2, low) + bce(0.9, high)
    return box, obj, cls


def test_loss_value_by_hand():
    outputs = [output.requires_grad_() for output in crafted_outputs()]
    result = YoloLoss(HEADS, LossConfig())(outputs, TARGETS, INPUT_SIZE)
    box, obj, cls = expected_parts()
    assert isinstance(result, LossOutput) and result.num_assigned == 2
    torch.testing.assert_close(result.box, torch.tensor(box / 2))  # batch of 2: parts are per image
    torch.testing.assert_close(result.obj, torch.tensor(obj / 2))
    torch.testing.assert_close(result.cls, torch.tensor(cls / 2))
    torch.testing.assert_close(result.total.detach(), torch.tensor((box + obj + cls) / 2))
    assert result.total.requires_grad and not result.box.requires_grad


def test_gains_balance_and_label_smoothing_by_hand():
    config = LossConfig(box_gain=0.5, obj_gain=2.0, cls_gain=3.0, label_smoothing=0.2, obj_balance=(1.0, 1.0))
    result = YoloLoss(HEADS, config)(crafted_outputs(), TARGETS, INPUT_SIZE)
    box, obj, cls = expected_parts(smoothing=0.2)
    torch.testing.assert_close(result.box, torch.tensor(0.5 * box / 2))
    torch.testing.assert_close(result.obj, torch.tensor(2.0 * obj / 2))
    torch.testing.assert_close(result.cls, torch.tensor(3.0 * cls / 2))
    # obj_balance weighs each head's objectness: the stride-16 head's cells are all zero logits but one.
    balanced = YoloLoss(HEADS, LossConfig(obj_balance=(1.0, 0.0)))(crafted_outputs(), TARGETS, INPUT_SIZE)
    large_obj = (2 * 2 * 4 * 4 - 3) * math.log(2) + bce(0.8, 0.0) + bce(1.5, 1.0)
    torch.testing.assert_close(balanced.obj, torch.tensor(large_obj / 2))


def test_darknet_box_gradient_is_darknets_delta():
    raw = torch.tensor([[0.7, -1.2, 0.3, -0.4]], requires_grad=True)
    offsets, log_wh = torch.tensor([[0.2, 0.9]]), torch.tensor([[0.1, -0.5]])
    for scale_x_y in (1.0, 2.0):
        (gradient,) = torch.autograd.grad(darknet_box_loss(raw, offsets, log_wh, scale_x_y).sum(), raw)
        decoded = scale_x_y * torch.sigmoid(raw[0, :2]) - (scale_x_y - 1) / 2
        torch.testing.assert_close(gradient[0, :2], (decoded - offsets[0]).detach() / scale_x_y)
        torch.testing.assert_close(gradient[0, 2:], (raw[0, 2:] - log_wh[0]).detach())


@pytest.mark.parametrize("box_loss", ["giou", "ciou"])
def test_iou_box_losses_vanish_on_an_exact_box(box_loss):
    outputs = crafted_outputs()
    # Make both assigned predictions decode exactly to their ground-truth boxes.
    set_prediction(outputs[0], 1, 1, (2, 1), [math.log(5 / 3), math.log(1 / 3), math.log(0.9), 0.0])
    set_prediction(outputs[1], 0, 0, (1, 2), [math.log(3), math.log(1 / 3), math.log(1.2), math.log(0.9)])
    result = YoloLoss(HEADS, LossConfig(box_loss=box_loss))(outputs, TARGETS, INPUT_SIZE)
    assert abs(result.box.item()) < 1e-5
    # The same box shifted down (sigmoid(ty) from 1/4 to about 0.98) costs more.
    set_prediction(outputs[1], 0, 0, (1, 2), [math.log(3), math.log(1 / 3) + 5.0, math.log(1.2), math.log(0.9)])
    assert YoloLoss(HEADS, LossConfig(box_loss=box_loss))(outputs, TARGETS, INPUT_SIZE).box.item() > 0.01


def test_empty_batch_and_empty_image():
    loss = YoloLoss(HEADS, LossConfig())
    outputs = [output.requires_grad_() for output in zero_outputs()]
    result = loss(outputs, torch.zeros(0, 6), INPUT_SIZE)
    assert result.num_assigned == 0 and result.box.item() == 0.0 and result.cls.item() == 0.0
    torch.testing.assert_close(result.obj, torch.tensor((2 * 2 * 16 + 2 * 2 * 64) * math.log(2) / 2))
    result.total.backward()
    assert all(torch.isfinite(output.grad).all() for output in outputs)

    # Image 1 has no boxes: only its objectness channels get a gradient.
    outputs = [torch.randn(2, spec.out_channels, 128 // spec.stride, 128 // spec.stride) for spec in HEADS]
    outputs = [output.requires_grad_() for output in outputs]
    result = loss(outputs, TARGETS[:1], INPUT_SIZE)
    assert result.num_assigned == 1 and torch.isfinite(result.total)
    result.total.backward()
    for output in outputs:
        gradient = output.grad[1].view(2, CHANNELS, *output.shape[2:])  # (A*(5+C), H, W) -> (A, 5+C, H, W)
        assert (gradient[:, 4] != 0).all()
        assert (gradient[:, [0, 1, 2, 3, 5, 6]] == 0).all()


@pytest.mark.parametrize("box_loss", ["darknet", "giou", "ciou"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("magnitude", [3.0, 1e4])
def test_gradients_are_finite(box_loss, dtype, magnitude):
    generator = torch.Generator().manual_seed(0)
    outputs = [
        (magnitude * torch.randn(2, spec.out_channels, 128 // spec.stride, 128 // spec.stride, generator=generator))
        .to(dtype)
        .requires_grad_()
        for spec in HEADS
    ]
    result = YoloLoss(HEADS, LossConfig(box_loss=box_loss, assign_thresh=0.2))(outputs, TARGETS, INPUT_SIZE)
    assert torch.isfinite(result.total) and result.total.dtype == torch.float32
    result.total.backward()
    for output in outputs:
        assert output.grad.dtype == dtype and torch.isfinite(output.grad).all()


@pytest.mark.parametrize("box_loss", ["darknet", "ciou"])
def test_bfloat16_autocast_model_gradients(box_loss):
    torch.manual_seed(0)
    model = create_model("yolov3_tiny_test", num_classes=2)
    loss = YoloLoss(model.head_specs, LossConfig(box_loss=box_loss))
    targets = torch.tensor([[0, 1, 0.4, 0.5, 0.3, 0.2], [1, 0, 0.6, 0.3, 0.1, 0.4]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outputs = model(torch.rand(2, 3, 64, 64))
    assert outputs[0].dtype == torch.bfloat16
    result = loss(outputs, targets, (64, 64))
    result.total.backward()
    assert torch.isfinite(result.total)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_config_loads_from_yaml_mapping():
    config = load_dataclass(
        LossConfig, {"box_loss": "ciou", "obj_balance": [4.0, 1.0, 0.4], "assign_thresh": 0.2, "box_gain": 0.07}
    )
    assert config == LossConfig(box_loss="ciou", obj_balance=(4.0, 1.0, 0.4), assign_thresh=0.2, box_gain=0.07)
    with pytest.raises(ConfigError, match="giou"):
        load_dataclass(LossConfig, {"box_loss": "gioo"})
    with pytest.raises(ConfigError, match="label_smoothing"):
        load_dataclass(LossConfig, {"label_smoothing": 1.5})


def test_bad_inputs_are_named_errors():
    loss = YoloLoss(HEADS, LossConfig())
    with pytest.raises(ValueError, match=r"class in 0\.\.1"):
        loss(zero_outputs(), torch.tensor([[0, 2, 0.5, 0.5, 0.1, 0.1]]), INPUT_SIZE)
    with pytest.raises(ValueError, match="image index"):
        loss(zero_outputs(), torch.tensor([[2, 0, 0.5, 0.5, 0.1, 0.1]]), INPUT_SIZE)
    with pytest.raises(ValueError, match="expected"):
        loss(zero_outputs(), TARGETS, (128, 96))
    with pytest.raises(ValueError, match="obj_balance"):
        YoloLoss(HEADS, LossConfig(obj_balance=(1.0, 1.0, 1.0)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("box_loss", ["darknet", "ciou"])
def test_cuda_matches_cpu(box_loss):
    loss = YoloLoss(HEADS, LossConfig(box_loss=box_loss, assign_thresh=0.2))
    on_cpu = loss(crafted_outputs(), TARGETS, INPUT_SIZE)
    on_cuda = loss([output.cuda() for output in crafted_outputs()], TARGETS, INPUT_SIZE)  # targets stay on the CPU
    assert on_cuda.total.device.type == "cuda" and on_cuda.num_assigned == on_cpu.num_assigned
    torch.testing.assert_close(on_cuda.total.cpu(), on_cpu.total)
