"""Collate (hand-made batches, empty images) and the loaders (sizes per batch, workers, reproducibility)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from augment_testing import ColouredBoxesDataset, targets_to_pixel_boxes

from yolov3.data.collate import Batch, collate_detections
from yolov3.data.letterbox import compute_letterbox
from yolov3.data.loader import build_train_loader, build_val_loader
from yolov3.data.mosaic import MosaicConfig
from yolov3.data.multiscale import MultiScaleConfig
from yolov3.data.transforms import AugmentConfig, TransformedSample, TransformSpec

SMALL_SCALES = MultiScaleConfig(min_size=128, max_size=192, step=32, every_batches=1)


def transformed(targets: list[list[float]], fill: float, path: str) -> TransformedSample:
    return TransformedSample(
        image=torch.full((3, 64, 96), fill),
        targets=torch.tensor(targets, dtype=torch.float32).reshape(-1, 5),
        path=path,
        image_id=len(path),
        original_size=(128, 192),
        letterbox=compute_letterbox((128, 192), (64, 96)),
    )


def test_collate_prefixes_targets_with_their_image_index() -> None:
    samples = [
        transformed([[3, 0.5, 0.5, 0.2, 0.4], [1, 0.1, 0.2, 0.1, 0.1]], 0.1, "a.jpg"),
        transformed([], 0.2, "bb.jpg"),  # an image without boxes
        transformed([[0, 0.9, 0.8, 0.2, 0.3]], 0.3, "ccc.jpg"),
    ]
    batch = collate_detections(samples)
    assert isinstance(batch, Batch) and len(batch) == 3
    assert batch.images.shape == (3, 3, 64, 96)
    assert [float(batch.images[i].mean()) for i in range(3)] == pytest.approx([0.1, 0.2, 0.3])
    expected = torch.tensor(
        [[0, 3, 0.5, 0.5, 0.2, 0.4], [0, 1, 0.1, 0.2, 0.1, 0.1], [2, 0, 0.9, 0.8, 0.2, 0.3]], dtype=torch.float32
    )
    torch.testing.assert_close(batch.targets, expected)
    assert batch.paths == ["a.jpg", "bb.jpg", "ccc.jpg"] and batch.image_ids == [5, 6, 7]
    assert batch.original_sizes == [(128, 192)] * 3
    assert batch.letterboxes[0].resized_size == (64, 96)
    moved = batch.to("cpu")
    assert moved.targets.shape == (3, 6) and moved.paths == batch.paths


def test_collate_a_batch_without_any_box_and_mismatched_sizes() -> None:
    batch = collate_detections([transformed([], 0.0, "a"), transformed([], 0.0, "b")])
    assert batch.targets.shape == (0, 6) and batch.targets.dtype == torch.float32
    odd = transformed([], 0.0, "c")
    odd.image = torch.zeros(3, 32, 32)
    with pytest.raises(ValueError, match="images of one batch must share a size"):
        collate_detections([transformed([], 0.0, "a"), odd])


def check_batch(batch: Batch, sizes: tuple[int, ...]) -> int:
    """The batch's images share one square size from ``sizes``; targets are valid; returns the size."""
    batch_size, channels, height, width = batch.images.shape
    assert channels == 3 and height == width and height in sizes
    assert batch.targets.shape[1] == 6
    assert ((batch.targets[:, 0] >= 0) & (batch.targets[:, 0] < batch_size)).all()
    assert ((batch.targets[:, 2:] >= 0) & (batch.targets[:, 2:] <= 1)).all()
    assert (batch.targets[:, 4:] > 0).all()
    return height


def run_epochs(loader: torch.utils.data.DataLoader, epochs: int) -> list[Batch]:
    batches = []
    for epoch in range(epochs):
        loader.batch_sampler.set_epoch(epoch)
        batches.extend(loader)
    return batches


@pytest.mark.slow
def test_train_loader_with_two_workers_is_consistent_and_reproducible() -> None:
    dataset = ColouredBoxesDataset(count=12, base_size=96, with_empty=True)
    augment = AugmentConfig(mosaic=MosaicConfig(probability=0.5, mixup_probability=0.2))
    sizes = SMALL_SCALES.sizes(160)

    def load(seed: int, workers: int) -> list[Batch]:
        loader = build_train_loader(dataset, augment, 4, workers, SMALL_SCALES, seed, image_size=160)
        assert loader.persistent_workers == (workers > 0)
        return run_epochs(loader, 2)

    first = load(seed=1, workers=2)
    assert len(first) == 6  # 12 images / 4 per batch, two epochs
    seen = [check_batch(batch, sizes) for batch in first]
    assert len(set(seen)) > 1  # a new size every batch
    again = load(seed=1, workers=2)
    for one, other in zip(first, again, strict=True):
        torch.testing.assert_close(one.images, other.images, rtol=0, atol=0)
        torch.testing.assert_close(one.targets, other.targets, rtol=0, atol=0)
        assert one.paths == other.paths
    different = load(seed=2, workers=2)
    assert any(not torch.equal(one.images, other.images) for one, other in zip(first, different, strict=True))
    in_process = load(seed=1, workers=0)
    for one, other in zip(in_process, load(seed=1, workers=0), strict=True):
        assert torch.equal(one.images, other.images) and torch.equal(one.targets, other.targets)


def test_epochs_differ_and_shuffle_covers_the_dataset() -> None:
    dataset = ColouredBoxesDataset(count=8, base_size=64)
    augment = AugmentConfig(transforms=(TransformSpec("ToGray", 0.5),), mosaic=MosaicConfig(probability=0.0))
    loader = build_train_loader(dataset, augment, 4, 0, SMALL_SCALES, seed=0, image_size=128)
    first, second = run_epochs(loader, 1), run_epochs(loader, 2)[2:]
    assert sorted(path for batch in first for path in batch.paths) == sorted(f"image{i}.png" for i in range(8))
    assert [batch.paths for batch in first] != [batch.paths for batch in second]


def test_val_loader_is_ordered_fixed_size_and_maps_back() -> None:
    dataset = ColouredBoxesDataset(count=5, base_size=80, with_empty=True)
    loader = build_val_loader(dataset, AugmentConfig(), batch_size=2, workers=0, image_size=96)
    batches = list(loader)
    assert [len(batch) for batch in batches] == [2, 2, 1]
    assert [image_id for batch in batches for image_id in batch.image_ids] == [0, 1, 2, 3, 4]
    for batch in batches:
        assert batch.images.shape[2:] == (96, 96)
        for position, image_id in enumerate(batch.image_ids):
            sample = dataset[image_id]
            targets = batch.targets[batch.targets[:, 0] == position][:, 1:]
            boxes = batch.letterboxes[position].boxes_to_original(targets_to_pixel_boxes(targets, (96, 96)))
            np.testing.assert_allclose(boxes, sample.boxes_xyxy, atol=1e-3)
            assert batch.original_sizes[position] == (sample.height, sample.width)


class SameImage(ColouredBoxesDataset):
    """Every index returns image 0, so only the random augmentation can make two samples differ."""

    def __getitem__(self, index: int):
        return super().__getitem__(0)


def test_each_worker_draws_its_own_augmentation() -> None:
    augment = AugmentConfig(mosaic=MosaicConfig(probability=0.0))
    fixed = MultiScaleConfig(enabled=False)
    loader = build_train_loader(SameImage(count=4, base_size=64), augment, 2, 2, fixed, seed=0, image_size=64)
    first_of_worker_0, first_of_worker_1 = run_epochs(loader, 1)  # batches go to the workers in turn
    assert not torch.equal(first_of_worker_0.images, first_of_worker_1.images)
