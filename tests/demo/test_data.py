"""The demo's source task and its three shifts, each built as stated."""

import numpy as np
import pytest

from layerwise.demo import data


@pytest.fixture(scope="module")
def digits():
    return data.load_digits()


@pytest.fixture(scope="module")
def original():
    """Each image's digit in scikit-learn's set, by its pixels."""
    from sklearn import datasets

    raw = datasets.load_digits()
    x = (raw.images / 16.0).astype("float32")
    return {image.tobytes(): int(digit) for image, digit in zip(x, raw.target)}


def _splits(task):
    return [task.pool, task.val, task.test]


def _digits_of(split, original):
    return np.array([original[image[..., 0].tobytes()] for image in split.x])


def test_every_image_is_used_once_and_the_held_out_ones_are_not_pretrained(digits):
    clean = [digits.source_train, *_splits(digits.shifts["output"][0]),
             *_splits(digits.shifts["feature"][0])]
    assert sum(len(s) for s in clean) == 1797
    images = np.concatenate([s.x.reshape(len(s), -1) for s in clean])
    assert len(np.unique(images, axis=0)) > 1790  # a few digits are drawn twice
    held_out = np.concatenate([s.x for s in _splits(digits.shifts["output"][0])])
    np.testing.assert_array_equal(held_out, digits.source_test.x)
    assert len(digits.source_train) == int(0.6 * (len(digits.source_train) + len(held_out)))


def test_input_level_tasks_are_the_held_out_images_corrupted_with_their_labels(
    digits, original
):
    tasks = digits.shifts["input"]
    assert [task.name for task in tasks] == list(data.CORRUPTIONS)
    clean = digits.source_test
    assert set(_digits_of(clean, original)) == set(data.SOURCE_CLASSES)
    np.testing.assert_array_equal(clean.y, _digits_of(clean, original))
    for task in tasks:
        x = np.concatenate([split.x for split in _splits(task)])
        y = np.concatenate([split.y for split in _splits(task)])
        np.testing.assert_array_equal(x, data.corrupt(clean.x, task.name))
        np.testing.assert_array_equal(y, clean.y)


def test_corruptions_as_documented():
    rng = np.random.default_rng(0)
    x = rng.random((4, 8, 8, 1)).astype("float32")
    np.testing.assert_allclose(data.corrupt(x, "inversion"), 1.0 - x)
    noisy = data.corrupt(x, "noise")
    assert noisy.min() >= 0.0 and noisy.max() <= 1.0
    assert 0.2 < float(np.std(noisy - x)) < 0.5
    np.testing.assert_array_equal(noisy, data.corrupt(x, "noise"))  # a fixed draw
    # Blur: a point spreads to its neighbours, and its weight falls.
    point = np.zeros((1, 8, 8, 1), "float32")
    point[0, 4, 4, 0] = 1.0
    blurred = data.corrupt(point, "blur")[0, ..., 0]
    assert blurred[0, 4] > 0 and blurred[4, 0] > 0
    np.testing.assert_allclose(blurred, blurred.T, atol=1e-7)
    # Four passes of 1-2-1 spread a point over offsets -4..4 with binomial
    # weights C(8, k) / 256; zero padding loses offset +4 (row and column 8).
    assert blurred.sum() == pytest.approx((255 / 256) ** 2, abs=1e-6)
    assert blurred[4, 4] == pytest.approx((70 / 256) ** 2, abs=1e-6)
    moved = data.corrupt(x, "translation")
    np.testing.assert_array_equal(moved[:, 1:, 1:], x[:, :-1, :-1])
    np.testing.assert_array_equal(moved[:, 0], 0.0)
    np.testing.assert_array_equal(moved[:, :, 0], 0.0)
    for corrupted in (noisy, blurred, moved):
        assert corrupted.dtype == np.float32
    with pytest.raises(ValueError, match="`corruption` must be one of"):
        data.corrupt(x, "fog")


def test_feature_level_task_is_digits_5_to_9_as_their_paired_classes(digits, original):
    [task] = digits.shifts["feature"]
    assert sorted(data.FEATURE_PAIRS.values()) == [5, 6, 7, 8, 9]
    for split in _splits(task):
        seen = _digits_of(split, original)
        assert set(seen) == {5, 6, 7, 8, 9}
        paired = {digit: cls for cls, digit in data.FEATURE_PAIRS.items()}
        np.testing.assert_array_equal(split.y, [paired[d] for d in seen])


def test_output_level_task_remaps_every_label_of_the_same_images(digits, original):
    [task] = digits.shifts["output"]
    assert all(new != old for old, new in enumerate(data.OUTPUT_MAP))
    for split in _splits(task):
        seen = _digits_of(split, original)
        assert set(seen) == {0, 1, 2, 3, 4}
        np.testing.assert_array_equal(split.y, np.array(data.OUTPUT_MAP)[seen])


def test_every_task_has_every_class_in_every_split(digits):
    for tasks in digits.shifts.values():
        for task in tasks:
            for split in _splits(task):
                assert set(np.unique(split.y)) == {0, 1, 2, 3, 4}
                assert np.bincount(task.pool.y).min() >= 10


def test_labelled_subset_has_per_class_images_and_depends_on_the_seed(digits):
    pool = digits.shifts["feature"][0].pool
    a, b = (data.labelled_subset(pool, 5, seed) for seed in (0, 1))
    assert np.bincount(a.y).tolist() == [5] * 5
    assert not np.array_equal(a.x, b.x)
    assert np.array_equal(a.x, data.labelled_subset(pool, 5, 0).x)
    fewest = int(np.bincount(pool.y).min())
    for bad in (0, fewest + 1):
        with pytest.raises(ValueError, match=f"`per_class` must be between 1 and {fewest}"):
            data.labelled_subset(pool, bad, 0)


def test_training_stream_passes_over_the_split_in_seeded_orders():
    split = data.Split(np.arange(25, dtype="float32"), np.arange(25) % 5)
    x, y = data.training_stream(split, steps=8, batch_size=10, seed=3)
    assert len(x) == 80
    assert sorted(x[:25]) == list(range(25)) and sorted(x[25:50]) == list(range(25))
    again, _ = data.training_stream(split, steps=8, batch_size=10, seed=3)
    assert np.array_equal(x, again)
