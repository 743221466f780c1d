"""seg.seeding.item_seed: the one per-item seed of training, equal to both schemes it replaced (the engine's
63-bit seed of python/numpy/torch and SegTrainDataset's 32-bit albumentations seed), so runs stay bit-identical."""
import numpy as np
import pytest

from seg.seeding import item_seed


@pytest.mark.parametrize("key", [(0, 0, 0), (5, 3, 17), (123456, 99, 1000), (2**31 - 1, 7, 0)])
def test_item_seed_equals_both_former_schemes(key):
    words = [int(w) for w in np.random.SeedSequence(list(key)).generate_state(4, np.uint32)]
    assert item_seed(*key) == (words[0] + words[1] * 2**32) % 2**63  # the engine's former 63-bit seed
    assert item_seed(*key, bits=32) == int(np.random.SeedSequence(list(key)).generate_state(1)[0])  # the dataset's


def test_item_seed_depends_on_each_part():
    seeds = {item_seed(s, e, i) for s in range(3) for e in range(3) for i in range(3)}
    assert len(seeds) == 27
