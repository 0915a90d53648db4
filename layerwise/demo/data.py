"""The demo's data: scikit-learn's bundled 8x8 digits, one source task and
three shifted target tasks built from held-out images.

The *source* task is digits 0-4 (pretraining). Each target task keeps the
source's five classes and changes one level of the problem, as in Lee et
al., "Surgical Fine-Tuning Improves Adaptation to Distribution Shifts"
(ICLR 2023):

- **input-level**: held-out digits 0-4, corrupted (`CORRUPTIONS`: noise,
  blur, contrast inversion, translation), labels unchanged; one task per
  corruption.
- **feature-level**: digits 5-9, each labelled as the source class it is
  paired with in `FEATURE_PAIRS`: the same classes, new sub-populations.
- **output-level**: held-out digits 0-4, labels remapped (`OUTPUT_MAP`):
  the same inputs, labels that mean something else.

Every split and every order of examples comes from NumPy generators seeded
here, not from a backend's random state, so all three backends see the
same images in the same order. Nothing is downloaded.
"""

import dataclasses

import numpy as np

SOURCE_CLASSES = (0, 1, 2, 3, 4)
# Each source class gains the digit that looks most like it among 5-9
# (1 and 7 share a stroke, 3 and 8 the right-hand curves, 4 and 9 the
# closed top with a stem, 0 and 6 the loop, 2 and 5 the opposite turns).
FEATURE_PAIRS = {0: 6, 1: 7, 2: 5, 3: 8, 4: 9}
# A derangement: no image keeps its label.
OUTPUT_MAP = (1, 2, 3, 4, 0)
CORRUPTIONS = ("noise", "blur", "inversion", "translation")
SHIFTS = ("input", "feature", "output")
SHIFT_LABELS = {
    "input": "input-level (corrupted images)",
    "feature": "feature-level (new sub-populations)",
    "output": "output-level (labels remapped)",
}
# Fixed once: the splits never depend on a run's seed.
_SPLIT_SEED = 0
_NOISE_STD = 0.5
_BLUR_PASSES = 4
# Fraction of the source images kept for pretraining; the rest are the
# held-out images of the input- and output-level tasks.
_PRETRAIN_FRACTION = 0.6


@dataclasses.dataclass(frozen=True)
class Split:
    """Images `x` (n, 8, 8, 1) in [0, 1] and labels `y` (n,) in 0..4."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self):
        return len(self.y)


@dataclasses.dataclass(frozen=True)
class Task:
    """One target task: labelled images are drawn from `pool`, learning
    rates chosen on `val`, results reported on `test`."""

    name: str
    pool: Split
    val: Split
    test: Split


@dataclasses.dataclass(frozen=True)
class Digits:
    """The source splits and the target tasks of every shift.

    `source_train` pretrains the network; `source_test` measures it.
    `shifts` maps each name in `SHIFTS` to its list of `Task`s (the four
    corruptions for "input", one task for the others).
    """

    source_train: Split
    source_test: Split
    shifts: dict


def corrupt(x, corruption):
    """One of `CORRUPTIONS` applied to images `x` (n, 8, 8, 1) in [0, 1].

    - "noise": Gaussian noise of standard deviation 0.5, a fixed draw per
      image (seeded by its position), clipped to [0, 1];
    - "blur": a 3x3 Gaussian blur (weights 1-2-1 in each direction) with
      zero padding, applied `_BLUR_PASSES` times;
    - "inversion": `1 - x`, white digits on black become black on white;
    - "translation": every image moved one pixel down and one right, the
      pixels moved in from the edge at 0.

    Each is severe on its own: on the test split the pretrained network's
    accuracy falls from 0.997 to 0.719 (noise), 0.314 (blur), 0.000
    (inversion) and 0.289 (translation), the same on every backend.
    """
    if corruption == "noise":
        rng = np.random.default_rng([_SPLIT_SEED, 5])
        return np.clip(x + rng.normal(0.0, _NOISE_STD, x.shape), 0.0, 1.0).astype("float32")
    if corruption == "blur":
        kernel = np.array([1.0, 2.0, 1.0]) / 4.0
        for _ in range(_BLUR_PASSES):
            for axis in (1, 2):
                padded = np.pad(x, [(1, 1) if a == axis else (0, 0) for a in range(4)])
                x = sum(
                    k * np.take(padded, range(i, i + x.shape[axis]), axis=axis)
                    for i, k in enumerate(kernel)
                )
        return x.astype("float32")
    if corruption == "inversion":
        return (1.0 - x).astype("float32")
    if corruption == "translation":
        moved = np.zeros_like(x)
        moved[:, 1:, 1:] = x[:, :-1, :-1]
        return moved.astype("float32")
    raise ValueError(
        f"`corruption` must be one of {CORRUPTIONS}. Received: corruption={corruption!r}"
    )


def _thirds(x, y):
    a, b = len(y) // 3, 2 * len(y) // 3
    return Split(x[:a], y[:a]), Split(x[a:b], y[a:b]), Split(x[b:], y[b:])


def load_digits():
    """Builds the source task and the three shifts from scikit-learn's digits.

    Returns:
        A `Digits`. Digits 0-4: 60% pretrain the network; the other 40%
        are the held-out images of the input- and output-level tasks
        (a third each for the labelled pool, validation and test). Digits
        5-9: a third each for the feature-level task's pool, validation
        and test.
    """
    from sklearn import datasets

    digits = datasets.load_digits()
    x = (digits.images / 16.0).astype("float32")[..., None]
    y = digits.target.astype("int32")
    order = np.random.default_rng(_SPLIT_SEED).permutation(len(y))
    source = order[np.isin(y[order], SOURCE_CLASSES)]
    novel = order[~np.isin(y[order], SOURCE_CLASSES)]
    cut = int(_PRETRAIN_FRACTION * len(source))
    held_out_x, held_out_y = x[source[cut:]], y[source[cut:]]
    to_source_class = {digit: cls for cls, digit in FEATURE_PAIRS.items()}
    novel_y = np.array([to_source_class[d] for d in y[novel]], "int32")
    remapped = np.array(OUTPUT_MAP, "int32")[held_out_y]

    def task(name, images, labels):
        return Task(name, *_thirds(images, labels))

    return Digits(
        source_train=Split(x[source[:cut]], y[source[:cut]]),
        source_test=Split(held_out_x, held_out_y),
        shifts={
            "input": [task(c, corrupt(held_out_x, c), held_out_y) for c in CORRUPTIONS],
            "feature": [task("digits 5-9", x[novel], novel_y)],
            "output": [task("labels remapped", held_out_x, remapped)],
        },
    )


def labelled_subset(pool, per_class, seed):
    """`per_class` images of each class drawn from `pool` (a `Split`)."""
    smallest = int(np.bincount(pool.y).min())
    if not 0 < per_class <= smallest:
        raise ValueError(
            f"`per_class` must be between 1 and {smallest}, the fewest images of a "
            f"class in the pool. Received: per_class={per_class}"
        )
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
