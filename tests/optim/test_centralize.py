"""`centralize` against `optax.centralize` mapped to Keras layouts, and its
composition with other transforms in rule order inside the optimizer."""

import jax
import keras
import numpy as np
import optax
import pytest

import layerwise as lw
from tests import helpers


def _variables(rng):
    layers = [
        helpers.built(keras.layers.Dense(5, name="dense"), (None, 4)),  # (4, 5)
        helpers.built(keras.layers.Conv1D(5, 3, name="conv1d"), (None, 8, 4)),  # (3, 4, 5)
        helpers.built(keras.layers.Conv2D(4, 3, name="conv2d"), (None, 6, 6, 3)),  # (3, 3, 3, 4)
        helpers.built(  # (in, heads, dim) = (6, 3, 4), bias (3, 4)
            keras.layers.EinsumDense("abc,cde->abde", output_shape=(None, 3, 4),
                                     bias_axes="de", name="einsum"),
            (None, 2, 6),
        ),
    ]
    variables = [v for layer in layers for v in layer.weights]
    for v in variables:
        v.assign(rng.normal(size=v.shape).astype("float32"))
    return variables + [keras.Variable(2.0, name="scalar")]


def _optax_on_keras_layout(grads):
    """`optax.centralize` with the output axis (Keras: last) moved to the
    front, where optax expects it, and back."""
    tx = optax.centralize()
    moved = [np.moveaxis(g, -1, 0) if g.ndim > 1 else g for g in grads]
    update = jax.jit(lambda g: tx.update(g, tx.init(g))[0])
    out = [np.asarray(u) for u in update(moved)]
    return [np.moveaxis(u, 0, -1) if u.ndim > 1 else u for u in out]


def test_equals_optax_centralize_with_the_output_axis_last():
    rng = np.random.default_rng(0)
    variables = _variables(rng)
    grads = [rng.normal(size=v.shape).astype("float32") + 3.0 for v in variables]
    actual = helpers.apply_transform(lw.centralize(), grads, variables)
    for a, e, g, v in zip(actual, _optax_on_keras_layout(grads), grads, variables):
        np.testing.assert_allclose(a, e, rtol=1e-6, atol=1e-6, err_msg=v.path)
        if g.ndim > 1:
            # Every output unit's gradient has mean 0 over all other axes.
            means = a.reshape(-1, g.shape[-1]).mean(axis=0)
            np.testing.assert_allclose(means, 0.0, atol=1e-6)
            assert np.abs(g.mean()) > 1.0  # ... which it did not have before
        else:
            np.testing.assert_array_equal(a, g)  # biases and scalars untouched


def test_optax_centralize_on_a_dense_kernel_as_is_averages_the_wrong_axis():
    """Why the mapping: optax keeps axis 0 (Keras' input axis) per unit."""
    g = np.arange(6, dtype="float32").reshape(2, 3) ** 2
    w = keras.Variable(np.zeros((2, 3)), name="kernel")
    (ours,) = helpers.apply_transform(lw.centralize(), [g], [w])
    np.testing.assert_allclose(ours, g - g.mean(axis=0, keepdims=True), rtol=1e-6)
    tx = optax.centralize()
    as_is = np.asarray(tx.update(g, tx.init(g))[0])
    np.testing.assert_allclose(as_is, g - g.mean(axis=1, keepdims=True), rtol=1e-6)
    assert not np.allclose(ours, as_is)


def test_explicit_axis_averages_those_axes_of_rank_2_and_more():
    rng = np.random.default_rng(1)
    kernel = keras.Variable(np.zeros((6, 3, 4)), name="kernel")  # (in, heads, dim)
    bias = keras.Variable(np.zeros((4,)), name="bias")
    grads = [rng.normal(size=(6, 3, 4)).astype("float32"), rng.normal(size=(4,)).astype("float32")]
    for axis in (0, (0,), -3):
        out_kernel, out_bias = helpers.apply_transform(lw.centralize(axis=axis), grads, [kernel, bias])
        np.testing.assert_allclose(out_kernel, grads[0] - grads[0].mean(axis=0, keepdims=True), atol=1e-6)
        np.testing.assert_array_equal(out_bias, grads[1])


def test_bad_axis_fails_early():
    for axis in [(), (1, 1), 0.5, False, "last"]:
        with pytest.raises(ValueError, match="`axis` must be None, an int or a non-empty tuple"):
            lw.centralize(axis=axis)


def test_axis_that_a_variable_lacks_names_it():
    w = keras.Variable(np.zeros((3, 2)), name="kernel")
    with pytest.raises(ValueError, match=r"Received: axis=\(2,\) for variable 'kernel'"):
        lw.centralize(axis=2)([keras.ops.ones((3, 2))], [w])


def test_serialization_round_trip():
    for transform in [lw.centralize(), lw.centralize(axis=(0, 1))]:
        config = keras.saving.serialize_keras_object(transform)
        assert config["registered_name"] == "layerwise>Centralize"
        restored = keras.saving.deserialize_keras_object(config)
        assert type(restored) is type(transform)
        assert restored.get_config() == transform.get_config()
        assert restored.axis == transform.axis


def _centralized(g):
    return g - g.mean(axis=tuple(range(g.ndim - 1)), keepdims=True) if g.ndim > 1 else g


def _agc(g, w, clipping):
    tx = optax.adaptive_grad_clip(clipping)
    return np.asarray(tx.update([g], tx.init([w]), [w])[0][0])


def _clip_norm(g, max_norm):
    return g * max_norm / max(np.linalg.norm(g), max_norm)


def _one_sgd_step(rules, variables, grads):
    """The gradients the update used: SGD(lr=1) moves by them exactly."""
    before = [np.array(keras.ops.convert_to_numpy(v)) for v in variables]
    opt = lw.LayerwiseOptimizer(keras.optimizers.SGD(1.0), rules)
    opt.apply([keras.ops.convert_to_tensor(g) for g in grads], variables)
    return [b - np.array(keras.ops.convert_to_numpy(v)) for b, v in zip(before, variables)]


@pytest.mark.parametrize("order", ["centralize_first", "clip_first"])
def test_transforms_compose_in_rule_order(order):
    """Within a rule, in list order; across rules, in rule order: equal to
    the transforms applied by hand in that order (and the two orders
    differ)."""
    rng = np.random.default_rng(2)
    kernel = keras.Variable(rng.normal(size=(4, 3)).astype("float32"), name="kernel")
    bias = keras.Variable(rng.normal(size=(3,)).astype("float32"), name="bias")
    grads = [(rng.normal(size=(4, 3)) + 1.0).astype("float32"), rng.normal(size=(3,)).astype("float32")]
    w, w_bias = (np.array(keras.ops.convert_to_numpy(v)) for v in (kernel, bias))
    centralize_agc = lw.Rule(".*", gradient=[lw.centralize(), lw.adaptive_clip(0.1)])
    clip = lw.Rule("kernel", gradient=lw.clip_by_norm(0.05))
    rules = [centralize_agc, clip] if order == "centralize_first" else [clip, centralize_agc]
    used_kernel, used_bias = _one_sgd_step(rules, [kernel, bias], grads)
    g = grads[0]
    if order == "centralize_first":
        expected = _clip_norm(_agc(_centralized(g), w, 0.1), 0.05)
        other = _agc(_centralized(_clip_norm(g, 0.05)), w, 0.1)
    else:
        expected = _agc(_centralized(_clip_norm(g, 0.05)), w, 0.1)
        other = _clip_norm(_agc(_centralized(g), w, 0.1), 0.05)
    np.testing.assert_allclose(used_kernel, expected, rtol=2e-5, atol=1e-7)
    assert np.max(np.abs(expected - other)) > 1e-3
    # The bias: centralize leaves vectors alone, then AGC (one unit).
    np.testing.assert_allclose(used_bias, _agc(grads[1], w_bias, 0.1), rtol=2e-5, atol=1e-7)
