"""Update transforms against numpy references (and optax's, on JAX)."""

import keras
import numpy as np
import pytest

import layerwise as lw
from tests.conftest import only_on

U = [np.array([[0.3, -0.4], [0.0, 1.2]], "float32"), np.array([-0.1, 0.2], "float32")]
G = [np.array([[-1.0, 2.0], [3.0, -4.0]], "float32"), np.array([1.0, 1.0], "float32")]
W = [np.array([[1.0, 2.0], [2.0, 4.0]], "float32"), np.array([0.5, 0.0], "float32")]
LR = [0.1, 0.01]


def _apply(transform, updates=U, grads=G, weights=W, rates=LR):
    t = keras.ops.convert_to_tensor
    out = transform(
        [t(u) for u in updates], [t(g) for g in grads], [t(w) for w in weights],
        [t(np.float32(r)) for r in rates],
    )
    return [np.array(keras.ops.convert_to_numpy(u)) for u in out]


def _norm(x):
    return np.sqrt(np.sum(np.asarray(x, "float64") ** 2))


def _trust(u, w, lr):
    return u * (_norm(w) / (_norm(u) / lr))


def _cautious(u, g):
    mask = (u * g < 0).astype("float32")
    return u * mask / max(mask.mean(), 1e-3)


def _rgn():
    relative = [_norm(g) / _norm(w) for g, w in zip(G, W)]
    return [u * r / max(relative) for u, r in zip(U, relative)]


@pytest.mark.parametrize(
    "transform, expected",
    [
        (lw.trust_ratio(), [_trust(u, w, r) for u, w, r in zip(U, W, LR)]),
        (lw.cautious(), [_cautious(u, g) for u, g in zip(U, G)]),
        (lw.clip_update(0.5), [u * 0.5 / max(_norm(u), 0.5) for u in U]),
        (
            lw.clip_update_block_rms(0.2),
            [u / max(1.0, np.sqrt(np.mean(u**2)) / 0.2) for u in U],
        ),
        (lw.skip_large_updates(10.0), U),
        (lw.skip_large_updates(1.0), [np.zeros_like(u) for u in U]),
        (lw.relative_gradient_norm(), _rgn()),
        (lw.per_variable_update(lambda u, g, w: u + 0.01 * g), [u + 0.01 * g for u, g in zip(U, G)]),
    ],
    ids=["trust", "cautious", "clip", "block_rms", "skip-keep", "skip", "rgn", "callable"],
)
def test_update_transform_matches_numpy(transform, expected):
    for actual, want in zip(_apply(transform), expected):
        np.testing.assert_allclose(actual, want, rtol=1e-5, atol=1e-7)


def test_trust_ratio_is_one_where_a_norm_is_zero():
    zero_w = [np.zeros((2,), "float32")]
    (out,) = _apply(lw.trust_ratio(), [U[1]], [G[1]], zero_w, [0.1])
    np.testing.assert_array_equal(out, U[1])
    (out,) = _apply(lw.trust_ratio(), [np.zeros(2, "float32")], [G[1]], [W[1]], [0.1])
    np.testing.assert_array_equal(out, 0.0)
    # A zero learning rate leaves a zero update, finite.
    (out,) = _apply(lw.trust_ratio(), [np.zeros(2, "float32")], [G[1]], [W[1]], [0.0])
    np.testing.assert_array_equal(out, 0.0)


def test_relative_gradient_norm_keeps_zero_weights_out_of_the_maximum():
    weights = [W[0], np.zeros((2,), "float32")]
    out = _apply(lw.relative_gradient_norm(), weights=weights)
    np.testing.assert_allclose(out[0], U[0], rtol=1e-6)  # the largest: factor 1
    np.testing.assert_allclose(out[1], U[1], rtol=1e-6)  # zero weights: kept


def test_cautious_equals_timms_formula_on_random_tensors():
    rng = np.random.default_rng(0)
    for dtype in ("float32", "float16"):
        u, g = (rng.normal(size=(33, 17)).astype(dtype) for _ in range(2))
        u[0, :5] = 0.0  # a zero update never descends
        (out,) = _apply(lw.cautious(), [u], [g], [u], [0.1])
        want = _cautious(u.astype("float32"), g.astype("float32")).astype(dtype)
        assert out.dtype == dtype
        np.testing.assert_allclose(out, want, rtol=2e-3 if dtype == "float16" else 1e-6)


def test_cautious_drops_a_non_finite_coordinate_it_masks():
    # timm's `update * mask` would keep NaN * 0 = NaN there.
    update = np.array([np.nan, 0.3], "float32")
    (out,) = _apply(lw.cautious(), [update], [G[1] * [1, -1]], [W[1]], [0.1])
    np.testing.assert_allclose(out, [0.0, 0.6], rtol=1e-6)


def test_skip_large_updates_skips_non_finite_updates():
    nan = [np.array([np.nan, 1.0], "float32")]
    (out,) = _apply(lw.skip_large_updates(10.0), nan, [G[1]], [W[1]], [0.1])
    np.testing.assert_array_equal(out, 0.0)


@only_on("jax")
def test_trust_ratio_and_block_rms_equal_optax():
    import optax

    for eps, min_norm, coefficient in ((0.0, 0.0, 1.0), (1e-3, 0.5, 0.02)):
        transform = optax.scale_by_trust_ratio(min_norm, coefficient, eps)
        raw = [u / r for u, r in zip(U, LR)]
        want, _ = transform.update(raw, transform.init(W), W)
        actual = _apply(lw.trust_ratio(coefficient, eps, min_norm))
        for a, w, r in zip(actual, want, LR):
            np.testing.assert_allclose(a, np.asarray(w) * r, rtol=1e-5)
    clip = optax.clip_by_block_rms(0.2)
    want, _ = clip.update(U, clip.init(W))
    for a, w in zip(_apply(lw.clip_update_block_rms(0.2)), want):
        np.testing.assert_allclose(a, w, rtol=1e-6)


@only_on("jax")
def test_skip_large_updates_decides_as_optax():
    import optax

    squared = sum(float(np.sum(u**2)) for u in U)
    for max_norm in (np.sqrt(squared) * 0.99, np.sqrt(squared) * 1.01):
        skip, _ = optax.skip_large_updates(U, 0, None, max_norm**2)
        out = _apply(lw.skip_large_updates(float(max_norm)))
        assert bool(skip) == all(not np.any(o) for o in out)


BAD_ARGUMENTS = [
    (lambda: lw.trust_ratio(trust_coefficient=0.0), "trust_coefficient"),
    (lambda: lw.trust_ratio(eps=-1.0), "eps"),
    (lambda: lw.clip_update(0.0), "max_norm"),
    (lambda: lw.clip_update_block_rms(float("inf")), "threshold"),
    (lambda: lw.skip_large_updates(-1.0), "max_norm"),
    (lambda: lw.per_variable_update(3), "callable"),
    (lambda: lw.per_variable_update(lambda u, g: u), "3 positional"),
    (lambda: lw.Rule(".*", update=[3]), "update transform"),
    (lambda: lw.Rule(".*", update=[lw.clip_by_norm(1.0)]), "update transform"),
]


def test_bad_arguments_fail_early():
    # One test for all cases: the suite's per-test reset costs more than they do.
    for make, message in BAD_ARGUMENTS:
        with pytest.raises((ValueError, TypeError), match=message):
            make()


@keras.saving.register_keras_serializable(package="tests_update")
def _halve(update, grad, weights):
    return update * 0.5


ROUND_TRIP = [
    lw.trust_ratio(0.5, 1e-6, 0.1),
    lw.cautious(),
    lw.clip_update(0.5),
    lw.clip_update_block_rms(0.2),
    lw.skip_large_updates(2.0),
    lw.relative_gradient_norm(),
    lw.per_variable_update(_halve),
]


def test_serialization_round_trip():
    for transform in ROUND_TRIP:
        restored = keras.saving.deserialize_keras_object(
            keras.saving.serialize_keras_object(transform)
        )
        assert type(restored) is type(transform)
        assert repr(restored) == repr(transform)
        for a, b in zip(_apply(restored), _apply(transform)):
            np.testing.assert_array_equal(a, b)


def _temporary_bytes(transform, shape):
    """XLA's temporary bytes of one compiled, donated apply on JAX."""
    import jax

    variable = keras.Variable(np.ones(shape, "float32"), name="w")
    optimizer = lw.LayerwiseOptimizer(
        keras.optimizers.Adam(1e-3), [lw.Rule(".*", update=[transform])]
    )
    optimizer.build([variable])

    def step(train, state, grads):
        return optimizer.stateless_apply(state, grads, train)

    compiled = (
        jax.jit(step, donate_argnums=(0, 1))
        .lower([variable.value], [v.value for v in optimizer.variables], [keras.ops.ones(shape)])
        .compile()
    )
    return compiled.memory_analysis().temp_size_in_bytes


@only_on("jax")
def test_update_transforms_hold_at_most_one_transient_copy_of_the_weights():
    # Issue #22's contract, read from the compiled step's buffers (bytes,
    # not time); `cautious` held two copies (a float mask) before.
    shape = (64, 64)
    parameter_bytes = 4 * 64 * 64
    for transform in ROUND_TRIP[:-1]:
        temporary = _temporary_bytes(transform, shape)
        assert temporary <= 1.1 * parameter_bytes, (transform, temporary / parameter_bytes)
