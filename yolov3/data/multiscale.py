"""Multi-scale training: one input size per batch, a new one every N batches (Darknet's ``random=1``).

Darknet draws a new square input size among 320, 352, ..., 608 every 10 batches. Here the range, step
and period come from :class:`MultiScaleConfig`; the size is chosen in the batch sampler, so that every
sample of a batch (whichever DataLoader worker loads it) is letterboxed to the same size: the sampler
yields lists of ``(index, (height, width))`` and the dataset wrapper's ``__getitem__`` takes such a pair.

The sizes of an epoch are a function of ``(seed, epoch)`` only (``set_epoch``, like ``DistributedSampler``),
so they are reproducible, and every DDP rank uses the same size for its n-th batch. Validation uses a
:class:`MultiScaleBatchSampler` with a single size, or a plain loader at the fixed size.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from torch.utils.data import BatchSampler, Sampler

STRIDE = 32  # the network's largest stride: every input side must be a multiple of it


@dataclass(frozen=True)
class MultiScaleConfig:
    """Input sizes ``min_size..max_size`` in steps of ``step``, a new one every ``every_batches`` batches."""

    enabled: bool = True
    min_size: int = 320
    max_size: int = 608
    step: int = 32
    every_batches: int = 10

    def __post_init__(self) -> None:
        for name in ("min_size", "max_size", "step"):
            value = getattr(self, name)
            if value <= 0 or value % STRIDE:
                raise ValueError(f"multiscale.{name} must be a positive multiple of {STRIDE}, got {value}")
        if self.max_size < self.min_size:
            raise ValueError(f"multiscale.max_size ({self.max_size}) is below min_size ({self.min_size})")
        if (self.max_size - self.min_size) % self.step:
            raise ValueError(
                f"multiscale: max_size - min_size ({self.max_size - self.min_size}) is not a multiple of "
                f"step ({self.step})"
            )
        if self.every_batches < 1:
            raise ValueError(f"multiscale.every_batches must be >= 1, got {self.every_batches}")

    def sizes(self, image_size: int) -> tuple[int, ...]:
        """The square sizes to draw from: the range when enabled, else ``image_size`` alone."""
        if not self.enabled:
            return (image_size,)
        return tuple(range(self.min_size, self.max_size + 1, self.step))


class MultiScaleBatchSampler(Sampler[list[tuple[int, tuple[int, int]]]]):
    """Batches of ``sampler``'s indices, each index paired with its batch's (height, width).

    ``sizes`` are square sides; a new one (different from the last when there is a choice) is drawn every
    ``every_batches`` batches from a generator seeded with ``(seed, epoch)``. ``set_epoch`` also reaches
    ``sampler.set_epoch`` (``DistributedSampler``).
    """

    def __init__(
        self,
        sampler: Sampler[int],
        batch_size: int,
        sizes: Sequence[int],
        every_batches: int = 10,
        drop_last: bool = True,
        seed: int = 0,
    ) -> None:
        if not sizes:
            raise ValueError("MultiScaleBatchSampler needs at least one size")
        if every_batches < 1:
            raise ValueError(f"every_batches must be >= 1, got {every_batches}")
        self.sampler = sampler
        self.batches = BatchSampler(sampler, batch_size, drop_last)
        self.sizes = tuple(int(size) for size in sizes)
        self.every_batches = every_batches
        self.seed = seed
        self.epoch = 0

    @classmethod
    def from_config(
        cls,
        sampler: Sampler[int],
        batch_size: int,
        config: MultiScaleConfig,
        image_size: int = 416,
        drop_last: bool = True,
        seed: int = 0,
    ) -> MultiScaleBatchSampler:
        """The sampler for ``config`` (a fixed ``image_size`` when multi-scale is disabled)."""
        return cls(sampler, batch_size, config.sizes(image_size), config.every_batches, drop_last, seed)

    def set_epoch(self, epoch: int) -> None:
        """Choose this epoch's sizes (and the underlying sampler's shuffle, if it has ``set_epoch``)."""
        self.epoch = epoch
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def sizes_for_epoch(self) -> list[int]:
        """The square side of every batch of the current epoch, in order."""
        groups = -(-len(self) // self.every_batches)
        generator = np.random.default_rng([self.seed, self.epoch])
        chosen: list[int] = []
        for _ in range(groups):
            choices = [size for size in self.sizes if not chosen or size != chosen[-1]] or list(self.sizes)
            chosen.append(int(generator.choice(choices)))
        return [chosen[batch // self.every_batches] for batch in range(len(self))]

    def __iter__(self) -> Iterator[list[tuple[int, tuple[int, int]]]]:
        sizes = self.sizes_for_epoch()
        for batch_number, indices in enumerate(self.batches):
            side = sizes[batch_number] if batch_number < len(sizes) else sizes[-1]
            yield [(index, (side, side)) for index in indices]

    def __len__(self) -> int:
        return len(self.batches)
