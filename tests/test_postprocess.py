"""Thresholding and NMS on hand-built decoded rows, with hand-computed IoUs."""

from __future__ import annotations

import pytest
import torch

from yolov3.inference.postprocess import postprocess


def rows(*boxes: tuple[tuple[float, float, float, float], float, list[float]]) -> torch.Tensor:
    """Decoded rows (1, N, 5+C) from (xyxy box, objectness, class probabilities)."""
    result = []
    for (left, top, right, bottom), objectness, class_probabilities in boxes:
        center = [(left + right) / 2, (top + bottom) / 2, right - left, bottom - top]
        result.append([*center, objectness, *class_probabilities])
    return torch.tensor([result], dtype=torch.float32)


def test_boxes_come_back_as_xyxy_with_obj_times_class_scores() -> None:
    (result,) = postprocess(rows(((10, 20, 50, 80), 0.8, [0.1, 0.9])))
    torch.testing.assert_close(result["boxes"], torch.tensor([[10.0, 20.0, 50.0, 80.0]]))
    torch.testing.assert_close(result["scores"], torch.tensor([0.72]))
    assert result["labels"].tolist() == [1]
    assert result["labels"].dtype == torch.int64


def test_overlapping_boxes_of_one_class_keep_the_higher_score() -> None:
    # IoU of (0,0,10,10) and (1,0,11,10): intersection 9*10 = 90, union 100 + 100 - 90 = 110 -> 0.818 > 0.45.
    decoded = rows(((1, 0, 11, 10), 0.8, [1.0]), ((0, 0, 10, 10), 0.9, [1.0]))
    (result,) = postprocess(decoded, iou_threshold=0.45)
    torch.testing.assert_close(result["boxes"], torch.tensor([[0.0, 0.0, 10.0, 10.0]]))
    torch.testing.assert_close(result["scores"], torch.tensor([0.9]))
    # Above the IoU threshold 0.82 both stay.
    (result,) = postprocess(decoded, iou_threshold=0.82)
    assert len(result["scores"]) == 2


def test_iou_below_the_threshold_keeps_both() -> None:
    # IoU of (0,0,10,10) and (5,0,15,10): intersection 50, union 150 -> 1/3.
    decoded = rows(((0, 0, 10, 10), 0.9, [1.0]), ((5, 0, 15, 10), 0.8, [1.0]))
    (result,) = postprocess(decoded, iou_threshold=0.34)
    torch.testing.assert_close(result["scores"], torch.tensor([0.9, 0.8]))
    (result,) = postprocess(decoded, iou_threshold=0.33)
    torch.testing.assert_close(result["scores"], torch.tensor([0.9]))


def test_different_classes_are_not_suppressed_unless_agnostic() -> None:
    decoded = rows(((0, 0, 10, 10), 0.9, [1.0, 0.0]), ((1, 0, 11, 10), 0.8, [0.0, 1.0]))
    (result,) = postprocess(decoded)
    assert result["labels"].tolist() == [0, 1]
    (result,) = postprocess(decoded, class_agnostic=True)
    assert result["labels"].tolist() == [0]
    torch.testing.assert_close(result["scores"], torch.tensor([0.9]))


def test_max_detections_keeps_the_best() -> None:
    boxes = [((20 * i, 0, 20 * i + 10, 10), 0.5 + 0.1 * i, [1.0]) for i in range(5)]  # disjoint boxes
    (result,) = postprocess(rows(*boxes), max_detections=3)
    torch.testing.assert_close(result["scores"], torch.tensor([0.9, 0.8, 0.7]))
    torch.testing.assert_close(result["boxes"][:, 0], torch.tensor([80.0, 60.0, 40.0]))
    (result,) = postprocess(rows(*boxes), max_detections=0)
    assert result["boxes"].shape == (0, 4)


def test_multi_label_emits_each_class_that_passes() -> None:
    # obj 0.9 * (0.8, 0.5, 0.1) = (0.72, 0.45, 0.09); threshold 0.3 passes classes 0 and 1.
    decoded = rows(((0, 0, 10, 10), 0.9, [0.8, 0.5, 0.1]))
    (result,) = postprocess(decoded, conf_threshold=0.3, multi_label=True)
    assert result["labels"].tolist() == [0, 1]
    torch.testing.assert_close(result["scores"], torch.tensor([0.72, 0.45]))
    torch.testing.assert_close(result["boxes"], torch.tensor([[0.0, 0.0, 10.0, 10.0]] * 2))
    (result,) = postprocess(decoded, conf_threshold=0.3, multi_label=False)
    assert result["labels"].tolist() == [0]
    # Agnostic NMS merges the two labels of the same box again (IoU 1).
    (result,) = postprocess(decoded, conf_threshold=0.3, multi_label=True, class_agnostic=True)
    assert result["labels"].tolist() == [0]


def test_threshold_applies_to_objectness_times_class_probability() -> None:
    decoded = rows(
        ((0, 0, 10, 10), 0.9, [0.32]),  # 0.288: both factors pass 0.3, the product does not
        ((20, 0, 30, 10), 0.5, [0.7]),  # 0.35: kept
        ((40, 0, 50, 10), 0.2, [1.0]),  # objectness alone below: dropped
    )
    for multi_label in (False, True):
        (result,) = postprocess(decoded, conf_threshold=0.3, multi_label=multi_label)
        torch.testing.assert_close(result["scores"], torch.tensor([0.35]))
        torch.testing.assert_close(result["boxes"], torch.tensor([[20.0, 0.0, 30.0, 10.0]]))


def test_images_in_a_batch_are_independent_and_empty_results_have_shapes() -> None:
    first = rows(((0, 0, 10, 10), 0.9, [1.0]))
    second = rows(((0, 0, 10, 10), 0.1, [1.0]))
    first_result, second_result = postprocess(torch.cat([first, second]))
    assert len(first_result["scores"]) == 1
    assert second_result["boxes"].shape == (0, 4)
    assert second_result["scores"].shape == (0,)
    assert second_result["labels"].shape == (0,)
    assert second_result["labels"].dtype == torch.int64


def test_bad_arguments_are_errors() -> None:
    with pytest.raises(ValueError, match=r"\(B, N, 5\+C\)"):
        postprocess(torch.zeros(10, 85))
    with pytest.raises(ValueError, match="iou_threshold"):
        postprocess(torch.zeros(1, 10, 85), iou_threshold=1.5)
