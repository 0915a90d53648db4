"""Gradient transforms against numpy references."""

import keras
import numpy as np
import pytest

import layerwise as lw

G = [np.array([[3.0, -4.0], [0.0, 12.0]], "float32"), np.array([-1.0, 2.0], "float32")]


def _apply(transform, grads=G):
    variables = [keras.Variable(np.zeros_like(g), name=f"v{i}") for i, g in enumerate(grads)]
    out = transform([keras.ops.convert_to_tensor(g) for g in grads], variables)
    return [np.array(keras.ops.convert_to_numpy(g)) for g in out]


def _norm(g):
    return np.sqrt(np.sum(g.astype("float64") ** 2))


@pytest.mark.parametrize(
    "transform, expected",
    [
        (lw.clip_by_value(2.0), [np.clip(g, -2, 2) for g in G]),
        (lw.clip_by_value(2.0, min_value=0.0), [np.clip(g, 0, 2) for g in G]),
        (lw.clip_by_norm(1.0), [g / max(_norm(g), 1.0) for g in G]),
        (lw.clip_by_norm(100.0), G),
        (lw.clip_by_l1_norm(2.0), [g * 2.0 / max(np.abs(g).sum(), 2.0) for g in G]),
        (
            lw.clip_by_global_norm(1.0),
            [g / np.sqrt(sum(_norm(h) ** 2 for h in G)) for g in G],
        ),
        (lw.scale(-0.5), [-0.5 * g for g in G]),
        (lw.zero(), [np.zeros_like(g) for g in G]),
        (lw.per_variable(lambda g, v: g + 1.0), [g + 1.0 for g in G]),
    ],
    ids=["value", "value-asym", "norm", "norm-noop", "l1", "global", "scale", "zero", "callable"],
)
def test_transform_matches_numpy(transform, expected):
    for actual, want in zip(_apply(transform), expected):
        np.testing.assert_allclose(actual, want, rtol=1e-6, atol=1e-7)


def test_chain_equals_transforms_applied_by_hand():
    t1, t2, t3 = lw.clip_by_global_norm(5.0), lw.scale(2.0), lw.clip_by_value(3.0)
    by_hand = G
    for t in (t1, t2, t3):
        by_hand = _apply(t, by_hand)
    for actual, want in zip(_apply(lw.chain(t1, t2, t3)), by_hand):
        np.testing.assert_allclose(actual, want, rtol=1e-6)


def test_zero_gradient_stays_zero_and_finite_under_norm_clipping():
    zeros = [np.zeros((2, 2), "float32")]
    for t in (lw.clip_by_norm(1.0), lw.clip_by_global_norm(1.0), lw.clip_by_l1_norm(1.0)):
        (out,) = _apply(t, zeros)
        np.testing.assert_array_equal(out, 0.0)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: lw.clip_by_norm(0.0), "max_norm"),
        (lambda: lw.clip_by_norm(float("nan")), "max_norm"),
        (lambda: lw.clip_by_global_norm(-1.0), "max_norm"),
        (lambda: lw.clip_by_value(-1.0), "max_value"),
        (lambda: lw.clip_by_value(1.0, min_value=2.0), "min_value"),
        (lambda: lw.scale("2"), "factor"),
        (lambda: lw.per_variable(3), "callable"),
        (lambda: lw.per_variable(lambda g: g), "2 positional"),
    ],
)
def test_bad_arguments_fail_early(make, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make()


@pytest.mark.parametrize(
    "transform",
    [
        lw.clip_by_value(1.0, min_value=-0.5),
        lw.clip_by_norm(2.0),
        lw.clip_by_l1_norm(2.0),
        lw.clip_by_global_norm(2.0),
        lw.scale(0.3),
        lw.zero(),
        lw.chain(lw.scale(2.0), lw.clip_by_norm(1.0)),
    ],
    ids=repr,
)
def test_serialization_round_trip(transform):
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(transform)
    )
    assert type(restored) is type(transform)
    assert restored.get_config() == transform.get_config()
    for a, b in zip(_apply(restored), _apply(transform)):
        np.testing.assert_array_equal(a, b)
