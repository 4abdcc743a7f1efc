"""Augmentation: boxes follow the pixels through every geometric transform, config errors name the problem."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from augment_testing import (
    ColouredBoxesDataset,
    colour_bounding_boxes,
    iou,
    targets_to_pixel_boxes,
)

from yolov3.config_loading import ConfigError, load_dataclass, to_dict
from yolov3.data.loader import build_train_dataset
from yolov3.data.mosaic import MosaicConfig, MosaicDataset
from yolov3.data.sample import DetectionSample
from yolov3.data.transforms import (
    ALLOWED_TRANSFORMS,
    AugmentConfig,
    DetectionTransform,
    TransformSpec,
    load_augment_config,
    tensor_to_image,
)

NO_MOSAIC = MosaicConfig(probability=0.0)
GEOMETRIC = {
    "Affine": {"scale": (0.8, 1.2), "translate_percent": (-0.1, 0.1), "rotate": (-5, 5)},
    "HorizontalFlip": {},
    "VerticalFlip": {},
    "RandomRotate90": {},
    "Transpose": {},
    "D4": {},
    "Perspective": {"scale": (0.02, 0.05)},
    "RandomScale": {"scale_limit": 0.3},
    "BBoxSafeRandomCrop": {},
}
PHOTOMETRIC = [name for name in ALLOWED_TRANSFORMS if name not in GEOMETRIC and name not in ("RandomFog",)] + [
    "RandomFog"
]


def config_with(*specs: TransformSpec, **fields: object) -> AugmentConfig:
    flip = any(spec.name == "HorizontalFlip" for spec in specs)
    return AugmentConfig(transforms=specs, horizontal_flip=flip, mosaic=NO_MOSAIC, **fields)


def assert_boxes_follow_pixels(image: np.ndarray, boxes: np.ndarray, classes: list[int]) -> None:
    """Every box lies inside the image and has IoU >= 0.9 with a region of pixels of its colour."""
    height, width = image.shape[:2]
    assert len(boxes) > 0
    for box, colour in zip(boxes, classes, strict=True):
        assert 0 <= box[0] < box[2] <= width + 1e-3 and 0 <= box[1] < box[3] <= height + 1e-3, box
        regions = colour_bounding_boxes(image, colour)
        assert regions, f"box of colour {colour} at {box} but no such pixels"
        best = max(iou(box, region) for region in regions)
        assert best >= 0.9, (colour, box, regions)


@pytest.mark.parametrize("name", [*GEOMETRIC, "letterbox"])
def test_geometric_transforms_move_boxes_with_the_pixels(name: str) -> None:
    dataset = ColouredBoxesDataset(count=4)
    specs = () if name == "letterbox" else (TransformSpec(name, 1.0, GEOMETRIC[name]),)
    size = (224, 256)  # (H, W), not square: the letterbox pads one way or the other
    for seed in range(3):
        transform = DetectionTransform(config_with(*specs), train=name != "letterbox", seed=seed)
        for index in range(len(dataset)):
            result = transform(dataset[index], size)
            assert result.image.shape == (3, *size)
            image = tensor_to_image(result.image, "darknet")
            boxes = targets_to_pixel_boxes(result.targets, size)
            assert_boxes_follow_pixels(image, boxes, result.targets[:, 0].long().tolist())


def test_mosaic_boxes_are_clipped_to_their_visible_pixels() -> None:
    dataset = ColouredBoxesDataset(count=4)
    mosaic = MosaicDataset(dataset, MosaicConfig(probability=1.0), fill=(127, 127, 127))
    fractions = []
    for seed in range(8):
        mosaic.reseed(seed)
        sample = mosaic.mosaic([0, 1, 2, 3], (256, 256))
        assert sample.image.shape == (256, 256, 3)
        assert_boxes_follow_pixels(sample.image, sample.boxes_xyxy, sample.labels.tolist())
        fractions.append(len(sample.labels) / 12)
    assert min(fractions) > 0 and max(fractions) <= 1
    assert len(set(fractions)) > 1  # the random centre changes which boxes survive


def test_full_training_pipeline_with_mosaic_keeps_boxes_on_their_pixels() -> None:
    dataset = ColouredBoxesDataset(count=4)
    config = AugmentConfig(
        transforms=(
            TransformSpec("Affine", 1.0, {"scale": (0.9, 1.1), "translate_percent": (-0.05, 0.05)}),
            TransformSpec("HorizontalFlip", 0.5),
        ),
        mosaic=MosaicConfig(probability=1.0),
    )
    training = build_train_dataset(dataset, config, image_size=256, seed=3)
    for index in range(4):
        result = training[(index, (192, 192))]
        image = tensor_to_image(result.image, "darknet")
        classes = result.targets[:, 0].long().tolist()
        assert_boxes_follow_pixels(image, targets_to_pixel_boxes(result.targets, (192, 192)), classes)


class BoxesThenBlack(ColouredBoxesDataset):
    """Image 0 with coloured boxes, image 1 black without boxes."""

    def __init__(self) -> None:
        super().__init__(count=2)

    def __getitem__(self, index: int) -> DetectionSample:
        if index == 0:
            return super().__getitem__(0)
        return DetectionSample(np.zeros((180, 240, 3), np.uint8), np.zeros((0, 4)), np.zeros(0))


def test_mixup_blends_two_samples_and_keeps_both_box_sets() -> None:
    dataset = BoxesThenBlack()
    mixing = MosaicDataset(dataset, MosaicConfig(probability=0.0, mixup_probability=1.0), fill=(127, 127, 127))
    seen = set()
    for seed in range(10):
        mixing.reseed(seed)
        sample = mixing[(0, (160, 160))]
        assert sample.image.shape == (160, 160, 3)
        assert ((sample.boxes_xyxy >= 0) & (sample.boxes_xyxy <= 160)).all()
        first = mixing._fit(dataset[0], (160, 160))
        if len(sample.labels) == 6:  # blended with itself: the same image, the boxes twice
            np.testing.assert_array_equal(sample.image, first.image)
            np.testing.assert_allclose(sample.boxes_xyxy, np.concatenate([first.boxes_xyxy] * 2))
        else:  # blended with the black image: every box's colour scaled by one ratio near 0.5
            assert sample.labels.tolist() == [0, 1, 2]
            np.testing.assert_allclose(sample.boxes_xyxy, first.boxes_xyxy)
            x1, y1, x2, y2 = first.boxes_xyxy[0].astype(int)
            colour = np.array(first.image[(y1 + y2) // 2, (x1 + x2) // 2], dtype=float)
            ratio = sample.image[(y1 + y2) // 2, (x1 + x2) // 2].max() / colour.max()
            assert 0.25 < ratio < 0.75
            np.testing.assert_allclose(sample.image[(y1 + y2) // 2, (x1 + x2) // 2], ratio * colour, atol=1.5)
        seen.add(len(sample.labels))
    assert seen == {3, 6}


@pytest.mark.parametrize("name", PHOTOMETRIC)
def test_photometric_transforms_leave_boxes_unchanged(name: str) -> None:
    sample = ColouredBoxesDataset(count=1)[0]
    transform = DetectionTransform(config_with(TransformSpec(name, 1.0)), train=True, seed=0)
    result = transform(sample, (sample.height, sample.width))
    assert result.image.shape == (3, sample.height, sample.width)
    assert float(result.image.min()) >= 0.0 and float(result.image.max()) <= 1.0
    expected = sample.boxes_xyxy / np.array([sample.width, sample.height] * 2, dtype=np.float32)
    got = targets_to_pixel_boxes(result.targets, (1, 1))
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert result.targets[:, 0].tolist() == sample.labels.tolist()


def test_validation_transform_is_a_letterbox_that_maps_back() -> None:
    sample = ColouredBoxesDataset(count=2)[1]
    result = DetectionTransform(AugmentConfig(), train=False)(sample, (320, 320))
    assert result.letterbox.original_size == (sample.height, sample.width) == result.original_size
    boxes = targets_to_pixel_boxes(result.targets, (320, 320))
    np.testing.assert_allclose(result.letterbox.boxes_to_original(boxes), sample.boxes_xyxy, atol=1e-3)
    top = result.letterbox.pad_top
    assert top > 0 and torch.allclose(result.image[:, :top], torch.tensor(127 / 255))  # Darknet's grey border


def test_flagged_boxes_are_dropped_for_training_only() -> None:
    sample = ColouredBoxesDataset(count=1)[0]
    sample.iscrowd = np.array([False, True, False])
    sample.difficult = np.array([False, False, True])
    train = DetectionTransform(config_with(), train=True)(sample, (256, 256))
    assert train.targets[:, 0].tolist() == [0]
    validation = DetectionTransform(config_with(), train=False)(sample, (256, 256))
    assert validation.targets[:, 0].tolist() == [0, 1, 2]
    kept = DetectionTransform(config_with(keep_flagged_boxes=True), train=True)(sample, (256, 256))
    assert kept.targets[:, 0].tolist() == [0, 1, 2]


def test_image_without_boxes() -> None:
    empty = DetectionSample(np.zeros((100, 150, 3), np.uint8), np.zeros((0, 4)), np.zeros(0))
    result = DetectionTransform(AugmentConfig(mosaic=NO_MOSAIC), train=True)(empty, (128, 128))
    assert result.targets.shape == (0, 5) and result.image.shape == (3, 128, 128)


def test_imagenet_normalization_and_mean_fill() -> None:
    sample = ColouredBoxesDataset(count=1)[0]
    config = config_with(TransformSpec("Affine", 1.0, {"scale": 0.5}), normalization="imagenet")
    transform = DetectionTransform(config, train=True)
    assert transform.compose.transforms[0].fill == (124, 116, 104)
    result = transform(sample, (256, 256))
    assert float(result.image.min()) < -1.0  # normalized, not 0..1
    corner = result.image[:, 0, 0]  # outside the half-size image: the ImageNet mean, normalized to about 0
    assert corner.abs().max() < 0.03
    restored = tensor_to_image(result.image, "imagenet")
    assert tuple(restored[0, 0]) == (124, 116, 104)


# --- configuration ------------------------------------------------------------------------------------


def load(mapping: dict) -> AugmentConfig:
    return load_dataclass(AugmentConfig, mapping, source="augment.yaml")


@pytest.mark.parametrize(
    ("transforms", "message"),
    [
        (
            [{"name": "GausNoise"}],
            "augment.yaml: transforms[0]: unknown transform 'GausNoise' (did you mean 'GaussNoise'?); allowed: ",
        ),
        ([{"name": "Affine", "params": {"scal": 2}}], "transforms[0]: Affine: unknown argument 'scal' (did you mean"),
        ([{"name": "GaussNoise", "params": {"std_range": "loud"}}], "GaussNoise: argument 'std_range'"),
        ([{"name": "CLAHE", "params": {"p": 1.0}}], "CLAHE: give the probability as the spec's 'p'"),
        ([{"name": "CLAHE", "p": 1.5}], "CLAHE: p must be in [0, 1]"),
        ([{"name": "ToGray", "p": 0.1}, {"name": "Affine", "param": {}}], "unknown key 'transforms[1].param'"),
    ],
)
def test_transform_config_errors(transforms: list, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        load({"transforms": transforms})
    assert message in str(error.value)


def test_unknown_transform_lists_the_allowed_names() -> None:
    with pytest.raises(ConfigError, match=r"allowed: .*MultiplicativeNoise.*HorizontalFlip"):
        load({"transforms": [{"name": "Mosaic"}]})


def test_horizontal_flip_switch() -> None:
    with pytest.raises(ConfigError, match="HorizontalFlip is listed in transforms but horizontal_flip is false"):
        load({"horizontal_flip": False, "transforms": [{"name": "HorizontalFlip", "p": 0.5}]})
    assert "HorizontalFlip" not in [spec.name for spec in load({"horizontal_flip": False}).training_specs()]
    added = load({"transforms": [{"name": "ToGray"}]}).training_specs()
    assert [(spec.name, spec.p) for spec in added] == [("ToGray", 0.5), ("HorizontalFlip", 0.5)]
    listed = load({"transforms": [{"name": "HorizontalFlip", "p": 0.3}]}).training_specs()
    assert [(spec.name, spec.p) for spec in listed] == [("HorizontalFlip", 0.3)]


def test_other_config_errors() -> None:
    with pytest.raises(ConfigError, match="'imagnet' is not one of 'darknet', 'imagenet'"):
        load({"normalization": "imagnet"})
    with pytest.raises(ConfigError, match=r"mosaic\.probability must be in"):
        load({"mosaic": {"probability": 2}})


def test_default_config_round_trips_through_yaml(tmp_path) -> None:
    path = tmp_path / "augment.yaml"
    path.write_text(yaml.safe_dump(to_dict(AugmentConfig())))
    loaded = load_augment_config(path, ["mosaic.mixup_probability=0.1"])
    assert to_dict(loaded) == to_dict(AugmentConfig(mosaic=MosaicConfig(mixup_probability=0.1)))
    names = [spec.name for spec in loaded.training_specs()]
    assert names == ["Affine", "ColorJitter", "ToGray", "CLAHE", "HorizontalFlip"]


def test_every_allowed_transform_runs_with_its_defaults() -> None:
    sample = ColouredBoxesDataset(count=1)[0]
    for name in ALLOWED_TRANSFORMS:
        result = DetectionTransform(config_with(TransformSpec(name, 1.0)), train=True, seed=1)(sample, (160, 192))
        targets = result.targets
        assert result.image.shape == (3, 160, 192), name
        assert ((targets[:, 1:] >= 0) & (targets[:, 1:] <= 1)).all(), name
        assert (targets[:, 3:] > 0).all(), name
