"""Darknet's preprocessing (``resize_image``, ``letterbox_image``) against pjreddie's Darknet itself, via ctypes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from darknet_library import DarknetImageLibrary

from yolov3.inference.preprocess import (
    RESIZE_MODES,
    DarknetLetterbox,
    Preprocessing,
    darknet_letterbox,
    darknet_resize,
    preprocess,
)

IMAGE_SIZES = ((576, 768), (512, 773), (100, 300), (7, 5), (1, 9), (9, 1), (416, 416), (333, 500), (2, 2))
TARGET_SIZES = ((416, 416), (320, 608), (13, 7), (608, 320))
SAMPLE_IMAGES = ("dog", "horses", "person", "eagle", "giraffe", "scream")


@pytest.fixture(scope="module")
def darknet_images(pjreddie_darknet: Path) -> DarknetImageLibrary:
    return DarknetImageLibrary(pjreddie_darknet.parent / "libdarknet.so")


def _darknet_defined(image_size: tuple[int, int], target: tuple[int, int]) -> bool:
    """Darknet divides by zero for a target side of 1 pixel (``(w_in - 1) / (w_out - 1)``); skip those."""
    (height, width), (target_height, target_width) = image_size, target
    return min(target) > 1 and min((height * target_width) // width, (width * target_height) // height) > 1


@pytest.mark.parametrize("image_size", IMAGE_SIZES)
def test_resize_and_letterbox_equal_darknets(darknet_images: DarknetImageLibrary, image_size: tuple[int, int]) -> None:
    image = np.random.default_rng(sum(image_size)).random((*image_size, 3), dtype=np.float32)
    compared = 0
    for target in (*TARGET_SIZES, image_size):
        if not _darknet_defined(image_size, target):
            continue
        np.testing.assert_allclose(darknet_resize(image, target), darknet_images.resize_image(image, target), atol=1e-6)
        ours, placement = darknet_letterbox(image, target)
        reference = darknet_images.letterbox_image(image, target)
        assert ours.shape == reference.shape == (*target, 3)
        np.testing.assert_allclose(ours, reference, atol=1e-6)
        assert isinstance(placement, DarknetLetterbox)
        compared += 1
    assert compared >= 3


@pytest.mark.parametrize("name", SAMPLE_IMAGES)
def test_preprocess_darknet_mode_equals_letterbox_image_on_the_sample_images(
    darknet_images: DarknetImageLibrary, shared_darknet: Path, name: str
) -> None:
    decoded = darknet_images.load_image_color(shared_darknet / "images" / f"{name}.jpg")  # stb_image's pixels
    image = np.rint(decoded * 255).astype(np.uint8)
    tensor, _ = preprocess(image, (416, 416), Preprocessing.from_mode("darknet"))
    reference = darknet_images.letterbox_image(decoded, (416, 416))
    # (3, H, W) -> (H, W, 3)
    np.testing.assert_allclose(tensor.numpy().transpose(1, 2, 0), reference, atol=1e-6)
    stretched, _ = preprocess(image, (416, 416), Preprocessing.from_mode("darknet-stretch"))
    reference = darknet_images.resize_image(decoded, (416, 416))
    np.testing.assert_allclose(stretched.numpy().transpose(1, 2, 0), reference, atol=1e-6)


def test_darknet_boxes_go_back_as_correct_yolo_boxes() -> None:
    # horses.jpg, 773 x 512, into 416: new_h = 512*416//773 = 275, embedded at row 70 but mapped back with 70.5.
    image = np.zeros((512, 773, 3), dtype=np.float32)
    _, placement = darknet_letterbox(image, (416, 416))
    assert placement.resized_size == (275, 416) and (placement.pad_top, placement.pad_left) == (70, 0)
    boxes = torch.tensor([[10.0, 100.0, 200.0, 300.0]])
    # correct_yolo_boxes on relative coordinates: y' = (y/416 - 70.5/416) / (275/416), times the image height
    expected_y = [(100 / 416 - 70.5 / 416) / (275 / 416) * 512, (300 / 416 - 70.5 / 416) / (275 / 416) * 512]
    expected_x = [10 / 416 * 773, 200 / 416 * 773]
    mapped = placement.boxes_to_original(boxes)
    torch.testing.assert_close(mapped[0, [0, 2]], torch.tensor(expected_x), rtol=1e-6, atol=1e-4)
    torch.testing.assert_close(mapped[0, [1, 3]], torch.tensor(expected_y), rtol=1e-6, atol=1e-4)


def test_modes_name_the_four_combinations() -> None:
    assert Preprocessing() == Preprocessing.from_mode("letterbox")
    assert Preprocessing(letterbox=False) == Preprocessing.from_mode("stretch")
    for name in RESIZE_MODES:
        assert Preprocessing.from_mode(name, fill=0.25).mode == name
    with pytest.raises(ValueError, match="unknown resize mode 'squash'"):
        Preprocessing.from_mode("squash")
    with pytest.raises(ValueError, match=r"resampling must be one of \('opencv', 'darknet'\), got 'cubic'"):
        Preprocessing(resampling="cubic")


def test_darknet_letterbox_fills_with_grey_and_keeps_the_image_inside() -> None:
    image = np.ones((100, 300, 3), dtype=np.float32)
    canvas, placement = darknet_letterbox(image, (416, 416))
    top, height = placement.pad_top, placement.resized_size[0]
    assert placement.resized_size == (138, 416) and top == 139
    assert np.all(canvas[:top] == 0.5) and np.all(canvas[top + height :] == 0.5)
    np.testing.assert_allclose(canvas[top : top + height], 1.0, atol=1e-6)
