"""Training and validation DataLoaders: augmentation, multi-scale batches, reproducible workers.

``build_train_loader`` chains dataset -> :class:`~yolov3.data.mosaic.MosaicDataset` (when the config asks
for mosaic or MixUp) -> :class:`TransformedDataset` (albumentations, letterbox, tensors) and batches it with
a :class:`~yolov3.data.multiscale.MultiScaleBatchSampler` over an epoch-seeded shuffle
(``DistributedSampler``; pass your own for DDP). Call ``loader.batch_sampler.set_epoch(epoch)`` before each
epoch, as with ``DistributedSampler``.

Both loaders are :class:`DetectionLoader`: the main process reports the unreadable images each batch carries to
the dataset's :class:`~yolov3.data.bad_data.UnreadableImages` (one warning and one count per file, whichever
worker read it), and :func:`end_epoch_unreadable_images` gives the per-epoch total for the log and TensorBoard.

Reproducibility: the loader's generator is seeded with ``seed``; each worker (kept alive across epochs)
reseeds every random generator of its dataset copy from ``torch.initial_seed()`` (the loader's base seed
plus the worker id) in :func:`seed_worker`, and in-process loading (``workers=0``) starts from ``seed``.
Batches are handed to workers in a fixed order, so a run with the same seed and worker count repeats.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, SequentialSampler

from yolov3.data.bad_data import BadDataPolicy, UnreadableImages
from yolov3.data.collate import Batch, collate_detections
from yolov3.data.mosaic import MosaicDataset
from yolov3.data.multiscale import MultiScaleBatchSampler, MultiScaleConfig
from yolov3.data.sample import DetectionSample, dataset_class_names, sized
from yolov3.data.transforms import AugmentConfig, DetectionTransform, TransformedSample

logger = logging.getLogger(__name__)


class SampleTransform(Protocol):
    """What :class:`TransformedDataset` applies: a :class:`DetectionTransform`, or another with its interface."""

    def reseed(self, seed: int) -> None: ...

    def __call__(self, sample: DetectionSample, size: tuple[int, int]) -> TransformedSample: ...


class TransformedDataset(Dataset):
    """``dataset`` (of DetectionSample, possibly a MosaicDataset) through a :class:`DetectionTransform`.

    Items are an index (letterboxed to ``image_size``) or ``(index, (height, width))`` from a
    :class:`MultiScaleBatchSampler`.
    """

    def __init__(
        self, dataset: Dataset, transform: SampleTransform, image_size: int | tuple[int, int] = 416, seed: int = 0
    ) -> None:
        self.dataset = dataset
        self.transform = transform
        self.image_size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        self.reseed(seed)

    def reseed(self, seed: int) -> None:
        """Give the transform and the wrapped dataset (if it has random state) independent seeds from ``seed``."""
        transform_seed, dataset_seed = np.random.SeedSequence(seed).generate_state(2)
        self.transform.reseed(int(transform_seed))
        if hasattr(self.dataset, "reseed"):
            self.dataset.reseed(int(dataset_seed))

    @property
    def class_names(self) -> Sequence[str]:
        return dataset_class_names(self.dataset)

    def __len__(self) -> int:
        return len(sized(self.dataset))

    def __getitem__(self, item: int | tuple[int, tuple[int, int]]) -> TransformedSample:
        index, size = item if isinstance(item, tuple) else (item, self.image_size)
        size = (int(size[0]), int(size[1]))
        sample = self.dataset.load(int(index), size) if isinstance(self.dataset, MosaicDataset) else self.dataset[index]
        return self.transform(sample, size)


class DetectionLoader(DataLoader):
    """A DataLoader of :class:`~yolov3.data.collate.Batch` that reports the unreadable images its batches carry
    to ``unreadable_images`` (the underlying dataset's, found through ``.dataset`` wrappers), in this process."""

    def __init__(self, dataset: Dataset, **options: Any) -> None:
        super().__init__(dataset, **options)
        self.unreadable_images = find_unreadable_images(dataset)

    # A generator over DataLoader's own iterator: the stubs require that iterator class as the return type.
    def __iter__(self) -> Iterator[Batch]:  # type: ignore[override]
        for batch in super().__iter__():
            self.unreadable_images.report(batch.image_problems)
            yield batch


def find_unreadable_images(dataset: Dataset) -> UnreadableImages:
    """The ``unreadable_images`` of ``dataset`` or of the dataset it wraps (transforms, mosaic, ``Subset``)."""
    current: object = dataset
    while current is not None:
        unreadable = getattr(current, "unreadable_images", None)
        if isinstance(unreadable, UnreadableImages):
            return unreadable
        current = getattr(current, "dataset", None)
    return UnreadableImages(BadDataPolicy())


def end_epoch_unreadable_images(loader: Iterable, epoch: int) -> dict[str, float]:
    """The TensorBoard scalar ``data/unreadable_images``: different unreadable files met since the last call
    (an epoch), also logged when there are any; empty for a loader that is not a :class:`DetectionLoader`."""
    unreadable = getattr(loader, "unreadable_images", None)
    if not isinstance(unreadable, UnreadableImages):
        return {}
    count = unreadable.end_epoch()
    if count:
        logger.warning(
            "epoch %d: %d unreadable image(s) skipped (%d different in this run; see the bad-data warnings)",
            epoch,
            count,
            len(unreadable.files),
        )
    return {"data/unreadable_images": float(count)}


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn``: seed Python, NumPy and the dataset's generators from this worker's torch seed."""
    seed = torch.initial_seed() % 2**32  # the loader's base seed + worker_id
    random.seed(seed)
    np.random.seed(seed)
    info = torch.utils.data.get_worker_info()
    if info is not None and hasattr(info.dataset, "reseed"):
        info.dataset.reseed(seed)


def _loader_options(workers: int, seed: int) -> dict:
    return {
        "num_workers": workers,
        "collate_fn": collate_detections,
        "pin_memory": torch.cuda.is_available(),
        "persistent_workers": workers > 0,
        "worker_init_fn": seed_worker if workers > 0 else None,
        "generator": torch.Generator().manual_seed(seed),
    }


def build_train_dataset(
    dataset: Dataset, augment: AugmentConfig, image_size: int = 416, seed: int = 0
) -> TransformedDataset:
    """``dataset`` with mosaic / MixUp (when configured) and the training transform."""
    source = dataset
    if augment.mosaic.enabled:
        source = MosaicDataset(dataset, augment.mosaic, fill=augment.fill, image_size=image_size)
    return TransformedDataset(source, DetectionTransform(augment, train=True), image_size, seed)


def build_train_loader(
    dataset: Dataset,
    augment: AugmentConfig,
    batch_size: int,
    workers: int = 2,
    multiscale: MultiScaleConfig | None = None,
    seed: int = 0,
    image_size: int = 416,
    sampler: Sampler[int] | None = None,
    drop_last: bool = True,
) -> DetectionLoader:
    """Shuffled, augmented, multi-scale batches (:class:`~yolov3.data.collate.Batch`) of ``dataset``.

    ``sampler`` defaults to a one-replica ``DistributedSampler`` (an epoch-seeded shuffle); give a
    ``DistributedSampler(dataset, shuffle=True, seed=seed)`` under DDP. ``multiscale=None`` uses the
    defaults (320..608 every 10 batches); a disabled config trains at ``image_size``.
    """
    multiscale = MultiScaleConfig() if multiscale is None else multiscale
    if sampler is None:
        sampler = DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=True, seed=seed)
    batch_sampler = MultiScaleBatchSampler.from_config(sampler, batch_size, multiscale, image_size, drop_last, seed)
    logger.info(
        "train loader: %d images, %d batches of %d, sizes %s, %d workers",
        len(sized(dataset)),
        len(batch_sampler),
        batch_size,
        multiscale.sizes(image_size),
        workers,
    )
    return DetectionLoader(
        build_train_dataset(dataset, augment, image_size, seed),
        batch_sampler=batch_sampler,
        **_loader_options(workers, seed),
    )


def build_val_loader(
    dataset: Dataset,
    augment: AugmentConfig,
    batch_size: int,
    workers: int = 2,
    image_size: int = 416,
    sampler: Sampler[int] | None = None,
    seed: int = 0,
) -> DetectionLoader:
    """Letterboxed batches of ``dataset`` in order at the fixed ``image_size``; only ``augment.normalization``
    (and its border fill) is used. Give a ``DistributedSampler(dataset, shuffle=False)`` under DDP."""
    transformed = TransformedDataset(dataset, DetectionTransform(augment, train=False), image_size, seed)
    return DetectionLoader(
        transformed,
        batch_size=batch_size,
        sampler=SequentialSampler(sized(dataset)) if sampler is None else sampler,
        drop_last=False,
        **_loader_options(workers, seed),
    )
