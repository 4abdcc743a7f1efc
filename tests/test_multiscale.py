"""Multi-scale batches: one size per batch, a multiple of 32 in range, changed every N batches, seeded."""

from __future__ import annotations

import pytest
from torch.utils.data import DistributedSampler, SequentialSampler

from yolov3.config_loading import ConfigError, load_dataclass
from yolov3.data.multiscale import MultiScaleBatchSampler, MultiScaleConfig


def epoch_batches(sampler: MultiScaleBatchSampler, epoch: int) -> list[list[tuple[int, tuple[int, int]]]]:
    sampler.set_epoch(epoch)
    return list(sampler)


def shuffled(count: int, seed: int = 0) -> DistributedSampler:
    return DistributedSampler(range(count), num_replicas=1, rank=0, shuffle=True, seed=seed)


def test_one_size_per_batch_in_range_changing_every_n_batches() -> None:
    config = MultiScaleConfig(min_size=320, max_size=608, step=32, every_batches=3)
    sampler = MultiScaleBatchSampler.from_config(shuffled(200), 4, config, seed=7)
    assert len(sampler) == 50
    all_sizes = set()
    for epoch in range(3):
        batches = epoch_batches(sampler, epoch)
        assert len(batches) == 50 and all(len(batch) == 4 for batch in batches)
        sizes = []
        for batch in batches:
            batch_sizes = {size for _, size in batch}
            assert len(batch_sizes) == 1
            height, width = batch_sizes.pop()
            assert height == width and height % 32 == 0 and 320 <= height <= 608
            sizes.append(height)
        for start in range(0, 50, 3):
            assert len(set(sizes[start : start + 3])) == 1  # constant within a group of N batches
            if start + 3 < 50:
                assert sizes[start + 3] != sizes[start]  # and a new one at each boundary
        assert sizes == sampler.sizes_for_epoch()
        all_sizes.update(sizes)
        assert sorted(index for batch in batches for index, _ in batch) == list(range(200))
    assert len(all_sizes) >= 6  # the draws cover the range


def test_reproducible_under_a_seed_and_epoch_aware() -> None:
    config = MultiScaleConfig(every_batches=2)

    def run(seed: int, epoch: int) -> list:
        return epoch_batches(MultiScaleBatchSampler.from_config(shuffled(64, seed), 8, config, seed=seed), epoch)

    assert run(0, 0) == run(0, 0)
    assert run(0, 1) == run(0, 1)
    assert run(0, 0) != run(0, 1)
    assert run(0, 0) != run(1, 0)


def test_validation_and_disabled_multiscale_use_one_fixed_size() -> None:
    disabled = MultiScaleConfig(enabled=False)
    assert disabled.sizes(416) == (416,)
    sampler = MultiScaleBatchSampler.from_config(SequentialSampler(range(10)), 4, disabled, 416, drop_last=False)
    batches = epoch_batches(sampler, 3)
    assert [len(batch) for batch in batches] == [4, 4, 2]
    assert {size for batch in batches for _, size in batch} == {(416, 416)}
    assert [index for batch in batches for index, _ in batch] == list(range(10))


def test_distributed_ranks_share_the_size_of_each_batch() -> None:
    config = MultiScaleConfig(every_batches=1)
    ranks = [
        MultiScaleBatchSampler.from_config(
            DistributedSampler(range(50), num_replicas=2, rank=rank, shuffle=True, seed=5), 5, config, seed=5
        )
        for rank in (0, 1)
    ]
    first, second = (epoch_batches(sampler, 2) for sampler in ranks)
    assert len(first) == len(second) == 5
    assert [batch[0][1] for batch in first] == [batch[0][1] for batch in second]
    indices = [{index for batch in batches for index, _ in batch} for batches in (first, second)]
    assert not indices[0] & indices[1] and len(indices[0] | indices[1]) == 50


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"min_size": 300}, "multiscale.min_size must be a positive multiple of 32, got 300"),
        ({"min_size": 640}, "max_size (608) is below min_size (640)"),
        ({"step": 64, "min_size": 320, "max_size": 608}, "max_size - min_size (288) is not a multiple of step (64)"),
        ({"every_batches": 0}, "every_batches must be >= 1"),
        ({"every_batch": 10}, "did you mean 'every_batches'"),
    ],
)
def test_config_errors(mapping: dict, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_dataclass(MultiScaleConfig, mapping, source="train.yaml")
    assert message in str(error.value)
