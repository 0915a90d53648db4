"""The demo's splits and orders come from fixed NumPy seeds."""

import numpy as np

from layerwise.demo import data


def test_splits_are_disjoint_and_relabelled():
    digits = data.load_digits()
    splits = [digits.source_train, digits.source_test, digits.target_pool,
              digits.target_val, digits.target_test]
    assert sum(len(s) for s in splits) == 1797
    images = np.concatenate([s.x.reshape(len(s), -1) for s in splits])
    assert len(np.unique(images, axis=0)) > 1790  # a few digits are drawn twice
    for split in splits:
        assert set(np.unique(split.y)) == {0, 1, 2, 3, 4}


def test_labelled_subset_has_per_class_images_and_depends_on_the_seed():
    pool = data.load_digits().target_pool
    a, b = (data.labelled_subset(pool, 5, seed) for seed in (0, 1))
    assert np.bincount(a.y).tolist() == [5] * 5
    assert not np.array_equal(a.x, b.x)
    assert np.array_equal(a.x, data.labelled_subset(pool, 5, 0).x)


def test_training_stream_passes_over_the_split_in_seeded_orders():
    split = data.Split(np.arange(25, dtype="float32"), np.arange(25) % 5)
    x, y = data.training_stream(split, steps=8, batch_size=10, seed=3)
    assert len(x) == 80
    assert sorted(x[:25]) == list(range(25)) and sorted(x[25:50]) == list(range(25))
    again, _ = data.training_stream(split, steps=8, batch_size=10, seed=3)
    assert np.array_equal(x, again)
