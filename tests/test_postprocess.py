"""Thresholding and NMS on hand-built decoded rows, with hand-computed IoUs."""

from __future__ import annotations

import pytest
import torch

from yolov3.inference.postprocess import darknet_postprocess, postprocess


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
    with pytest.raises(ValueError, match=r"max_detections must be at least 1 .*got 0"):  # one rule: DetectionConfig's
        postprocess(rows(*boxes), max_detections=0)


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


def darknet_reference(decoded: torch.Tensor, thresh: float, nms: float) -> list[tuple[int, float, tuple]]:
    """get_yolo_detections + do_nms_sort (src/yolo_layer.c, src/box.c) transliterated loop by loop."""
    dets = []
    for row in decoded[0].tolist():
        objectness = row[4]
        if objectness <= thresh:
            continue
        probs = [objectness * p if objectness * p > thresh else 0.0 for p in row[5:]]
        dets.append({"box": row[:4], "prob": probs})

    def box_iou(a: list[float], b: list[float]) -> float:
        width = min(a[0] + a[2] / 2, b[0] + b[2] / 2) - max(a[0] - a[2] / 2, b[0] - b[2] / 2)
        height = min(a[1] + a[3] / 2, b[1] + b[3] / 2) - max(a[1] - a[3] / 2, b[1] - b[3] / 2)
        intersection = 0.0 if width < 0 or height < 0 else width * height
        return intersection / (a[2] * a[3] + b[2] * b[3] - intersection)

    for k in range(decoded.shape[-1] - 5):
        dets.sort(key=lambda det: -det["prob"][k])
        for i, first in enumerate(dets):
            if first["prob"][k] == 0:
                continue
            for second in dets[i + 1 :]:
                if box_iou(first["box"], second["box"]) > nms:
                    second["prob"][k] = 0.0
    return [(k, p, tuple(det["box"])) for det in dets for k, p in enumerate(det["prob"]) if p > thresh]


@pytest.mark.parametrize("seed", range(5))
def test_darknet_output_equals_a_transliteration_of_do_nms_sort(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    count, classes = 300, 4
    centers = torch.rand(count, 2, generator=generator) * 100  # crowded: many overlaps
    sizes = 5 + torch.rand(count, 2, generator=generator) * 40
    probabilities = torch.rand(count, 1 + classes, generator=generator) ** 0.5
    decoded = torch.cat((centers, sizes, probabilities), dim=1)[None]  # (1, N, 5+C)
    (result,) = darknet_postprocess(decoded, conf_threshold=0.25, iou_threshold=0.45)
    reference = darknet_reference(decoded, 0.25, 0.45)
    assert len(reference) > 20 and len({label for label, _, _ in reference}) == classes
    ours = sorted(zip(result["labels"].tolist(), result["scores"].tolist(), result["boxes"].tolist(), strict=True))
    expected = sorted(
        (label, score, [x - w / 2, y - h / 2, x + w / 2, y + h / 2]) for label, score, (x, y, w, h) in reference
    )
    assert [label for label, _, _ in ours] == [label for label, _, _ in expected]
    assert [score for _, score, _ in ours] == pytest.approx([score for _, score, _ in expected], abs=1e-6)
    assert [box for _, _, box in ours] == [pytest.approx(box, abs=1e-4) for _, _, box in expected]
    assert result["scores"].tolist() == sorted(result["scores"].tolist(), reverse=True)


def test_darknet_output_reports_every_class_of_a_box_over_the_threshold() -> None:
    # dog.jpg's car 52% / truck 56% case: one box, two classes over 0.25; the 0.2 class is zeroed.
    decoded = rows(((10, 10, 50, 50), 0.8, [0.65, 0.7, 0.25]), ((11, 10, 51, 50), 0.7, [0.6, 0.1, 0.1]))
    (result,) = darknet_postprocess(decoded)
    assert result["labels"].tolist() == [1, 0]  # class 0 of the second box is suppressed by the first's
    torch.testing.assert_close(result["scores"], torch.tensor([0.56, 0.52]))
    (empty,) = darknet_postprocess(rows(((0, 0, 1, 1), 0.25, [1.0])))  # objectness must be > thresh
    assert empty["boxes"].shape == (0, 4) and empty["labels"].dtype == torch.int64
