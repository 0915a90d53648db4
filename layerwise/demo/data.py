"""The demo's data: scikit-learn's bundled 8x8 digits, as two tasks.

The *source* task is digits 0-4 (pretraining); the *target* task is digits
5-9, learnt from a few labelled images per class. Every split and every
order of examples comes from NumPy generators seeded here, not from a
backend's random state, so all three backends see the same images in the
same order. Nothing is downloaded.
"""

import dataclasses

import numpy as np

SOURCE_CLASSES = (0, 1, 2, 3, 4)
TARGET_CLASSES = (5, 6, 7, 8, 9)
# Fixed once: the splits never depend on a run's seed.
_SPLIT_SEED = 0


@dataclasses.dataclass(frozen=True)
class Split:
    """Images `x` (n, 8, 8, 1) in [0, 1] and labels `y` (n,) in 0..4."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self):
        return len(self.y)


@dataclasses.dataclass(frozen=True)
class Digits:
    """The splits of both tasks.

    `source_train` pretrains the body and the source head; `source_test`
    measures what fine-tuning leaves of the source task. Labelled target
    images are drawn from `target_pool`; learning rates are chosen on
    `target_val` and results reported on `target_test`.
    """

    source_train: Split
    source_test: Split
    target_pool: Split
    target_val: Split
    target_test: Split


def load_digits():
    """Splits scikit-learn's digits into the source and target tasks.

    Returns:
        A `Digits`: source 70% train / 30% test; target 30% pool for
        labelled draws / 30% validation / 40% test, each class relabelled
        0..4 within its task.
    """
    from sklearn import datasets

    digits = datasets.load_digits()
    x = (digits.images / 16.0).astype("float32")[..., None]
    y = digits.target.astype("int32")
    order = np.random.default_rng(_SPLIT_SEED).permutation(len(y))

    def take(indices, classes):
        return Split(x[indices], (y[indices] - classes[0]).astype("int32"))

    source = order[np.isin(y[order], SOURCE_CLASSES)]
    target = order[np.isin(y[order], TARGET_CLASSES)]
    s, t1, t2 = int(0.7 * len(source)), int(0.3 * len(target)), int(0.6 * len(target))
    return Digits(
        source_train=take(source[:s], SOURCE_CLASSES),
        source_test=take(source[s:], SOURCE_CLASSES),
        target_pool=take(target[:t1], TARGET_CLASSES),
        target_val=take(target[t1:t2], TARGET_CLASSES),
        target_test=take(target[t2:], TARGET_CLASSES),
    )


def labelled_subset(pool, per_class, seed):
    """`per_class` images of each class drawn from `pool` (a `Split`)."""
    rng = np.random.default_rng([seed, 1])
    picked = np.concatenate(
        [rng.choice(np.flatnonzero(pool.y == c), per_class, replace=False)
         for c in np.unique(pool.y)]
    )
    return Split(pool.x[picked], pool.y[picked])


def training_stream(split, steps, batch_size, seed):
    """The examples of `steps` batches, as one array: passes over `split`,
    each in a fresh seeded order.

    `fit(..., shuffle=False, steps_per_epoch=...)` reads it front to back
    across epochs, so the order is the same on every backend.
    """
    rng = np.random.default_rng([seed, 2])
    needed = steps * batch_size
    passes = -(-needed // len(split))
    order = np.concatenate([rng.permutation(len(split)) for _ in range(passes)])
    order = order[:needed]
    return split.x[order], split.y[order]
