"""Letterbox placement (Darknet's integer arithmetic), preprocessing, and the box round trip back to the image."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from yolov3.data.letterbox import compute_letterbox
from yolov3.inference.preprocess import Preprocessing, preprocess

# (height, width): landscape, portrait, square, very wide, very tall, full HD, and tiny images.
IMAGE_SIZES = ((576, 768), (768, 576), (500, 500), (100, 2000), (2000, 100), (1080, 1920), (7, 5), (3, 9))
NETWORK_SIZES = ((416, 416), (320, 608))


def test_darknet_integer_placement() -> None:
    # dog.jpg, 768 wide x 576 high, into 416x416: 416 x (576*416)//768 = 312 rows, (416-312)//2 = 52 on top.
    placement = compute_letterbox((576, 768), (416, 416))
    assert placement.resized_size == (312, 416)
    assert (placement.pad_top, placement.pad_left) == (52, 0)
    # 333 wide x 500 high: width (333*416)//500 = 277 (277.056 floored), left pad (416-277)//2 = 69, right 70.
    placement = compute_letterbox((500, 333), (416, 416))
    assert placement.resized_size == (416, 277)
    assert (placement.pad_top, placement.pad_left) == (0, 69)
    # Non-square input 320 high x 608 wide: 768x576 fits by height, 320 x (768*320)//576 = 426 columns.
    placement = compute_letterbox((576, 768), (320, 608))
    assert placement.resized_size == (320, 426)
    assert (placement.pad_top, placement.pad_left) == (0, 91)


def test_stretch_mode_has_no_padding() -> None:
    placement = compute_letterbox((576, 768), (416, 416), keep_aspect=False)
    assert placement.resized_size == (416, 416)
    assert (placement.pad_top, placement.pad_left) == (0, 0)


def test_preprocess_fills_the_border_with_exactly_half_grey() -> None:
    image = np.zeros((576, 768, 3), dtype=np.uint8)
    image[:, :, 0] = 255
    tensor, placement = preprocess(image, (416, 416), Preprocessing())
    assert tensor.shape == (3, 416, 416)
    assert tensor.dtype == torch.float32
    assert torch.all(tensor[:, :52] == 0.5)
    assert torch.all(tensor[:, 52 + 312 :] == 0.5)
    content = tensor[:, 52 : 52 + 312]
    assert torch.all(content[0] == 1.0)
    assert torch.all(content[1:] == 0.0)
    assert placement.pad_top == 52
    other_fill, _ = preprocess(image, (416, 416), Preprocessing(fill=0.25))
    assert torch.all(other_fill[:, :52] == 0.25)


@pytest.mark.parametrize("network_size", NETWORK_SIZES)
@pytest.mark.parametrize("letterbox", [True, False], ids=["letterbox", "stretch"])
def test_arithmetic_round_trip_is_exact(network_size: tuple[int, int], letterbox: bool) -> None:
    rng = np.random.default_rng(0)
    for height, width in IMAGE_SIZES:
        placement = compute_letterbox((height, width), network_size, keep_aspect=letterbox)
        corners = rng.uniform(0, 1, (20, 2, 2)) * [width, height]  # (N, 2 corners, (x, y))
        boxes_xyxy = np.concatenate([corners.min(1), corners.max(1)], axis=1)  # (N, 4)
        back = placement.boxes_to_original(placement.boxes_to_network(boxes_xyxy))
        np.testing.assert_allclose(back, boxes_xyxy, atol=1e-6 * max(height, width))
        tensor_back = placement.boxes_to_original(placement.boxes_to_network(torch.from_numpy(boxes_xyxy)))
        np.testing.assert_allclose(tensor_back.numpy(), boxes_xyxy, atol=1e-6 * max(height, width))


def test_boxes_outside_the_image_are_clipped() -> None:
    placement = compute_letterbox((576, 768), (416, 416))
    boxes = placement.boxes_to_original(torch.tensor([[-10.0, 0.0, 500.0, 416.0]]))  # into the grey border
    torch.testing.assert_close(boxes, torch.tensor([[0.0, 0.0, 768.0, 576.0]]))


@pytest.mark.parametrize("network_size", NETWORK_SIZES)
@pytest.mark.parametrize("letterbox", [True, False], ids=["letterbox", "stretch"])
def test_a_drawn_box_found_in_the_network_input_maps_back_onto_itself(
    network_size: tuple[int, int], letterbox: bool
) -> None:
    """A white rectangle on black, measured in the preprocessed input and mapped back, lands within one pixel.

    One pixel of the network input: a downscaled image can only be located to within 1/scale original
    pixels (that is what the network sees); an upscaled one to within one original pixel.
    """
    for height, width in IMAGE_SIZES:
        image = np.zeros((height, width, 3), dtype=np.uint8)
        left, top = int(width * 0.2), int(height * 0.3)
        right, bottom = max(left + 1, int(width * 0.7)), max(top + 1, int(height * 0.9))
        image[top:bottom, left:right] = 255
        tensor, placement = preprocess(image, network_size, Preprocessing(letterbox=letterbox))
        white = tensor[0].numpy() > 0.75  # neither the black background nor the 0.5 fill
        rows, columns = np.nonzero(white.any(axis=1))[0], np.nonzero(white.any(axis=0))[0]
        found_xyxy = np.array([[columns[0], rows[0], columns[-1] + 1, rows[-1] + 1]], dtype=np.float64)
        back = placement.boxes_to_original(found_xyxy)[0]
        tolerance_x = max(1.0, 1.0 / placement.scale_x)
        tolerance_y = max(1.0, 1.0 / placement.scale_y)
        error = np.abs(back - [left, top, right, bottom])
        assert error[[0, 2]].max() <= tolerance_x, (height, width, back)
        assert error[[1, 3]].max() <= tolerance_y, (height, width, back)


def test_preprocess_rejects_images_that_are_not_rgb_uint8() -> None:
    with pytest.raises(ValueError, match=r"expected an \(H, W, 3\) uint8 RGB image, got shape \(10, 10\)"):
        preprocess(np.zeros((10, 10), dtype=np.uint8), (416, 416))
    with pytest.raises(ValueError, match="dtype float32"):
        preprocess(np.zeros((10, 10, 3), dtype=np.float32), (416, 416))
    with pytest.raises(ValueError, match=r"fill must be in 0\.\.1"):
        Preprocessing(fill=127)
