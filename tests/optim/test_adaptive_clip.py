"""`adaptive_clip` against `optax.adaptive_grad_clip` and a numpy formula.

optax runs on JAX's CPU whatever `KERAS_BACKEND` is: it is the reference on
every backend, fed the same numpy gradients and weights.
"""

import os

import keras
import jax
import numpy as np
import optax
import pytest

import layerwise as lw
from layerwise.optim.adaptive_clip import default_unit_axes
from tests import helpers


def _layers():
    """Keras layers whose variables cover every default case."""
    return {
        "dense": helpers.built(keras.layers.Dense(5), (None, 4)),  # (4, 5), (5,)
        "dense_1_in": helpers.built(keras.layers.Dense(5), (None, 1)),  # (1, 5): one unit
        "einsum_2d": helpers.built(
            keras.layers.EinsumDense("ab,bc->ac", output_shape=5, bias_axes="c"), (None, 4)
        ),
        "einsum_heads": helpers.built(  # (in, heads, dim) = (6, 3, 4), bias (3, 4)
            keras.layers.EinsumDense("abc,cde->abde", output_shape=(None, 3, 4), bias_axes="de"),
            (None, 2, 6),
        ),
        "conv2d": helpers.built(keras.layers.Conv2D(4, 3), (None, 6, 6, 3)),  # (3, 3, 3, 4)
        "conv3d": helpers.built(keras.layers.Conv3D(2, 2), (None, 3, 3, 3, 2)),  # rank 5
    }


def _variables(layers, rng):
    variables = [v for layer in layers for v in layer.weights]
    for v in variables:
        # Dense's bias stays at its zero initialization: the `eps` floor.
        if not v.path.startswith("dense/"):
            v.assign(rng.normal(size=v.shape).astype("float32"))
    return variables


def _gradients(variables, rng):
    # Units of very different scales, so some are clipped and some are not.
    return [
        (rng.normal(size=v.shape) * 10.0 ** rng.uniform(-5, 0, size=v.shape[-1:])).astype("float32")
        for v in variables
    ]


def _numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def _optax(grads, variables, **kwargs):
    tx = optax.adaptive_grad_clip(**kwargs)
    params = [_numpy(v) for v in variables]
    # One compiled program instead of one compilation per operation.
    update = jax.jit(lambda g, p: tx.update(g, tx.init(p), p)[0])
    return [np.asarray(u) for u in update(grads, params)]


def _agc_numpy(g, w, clipping, eps, axes):
    """The NFNets formula in float64; `axes=None` reduces all axes."""
    g, w = g.astype("float64"), w.astype("float64")
    g_norm = np.sqrt(np.sum(g**2, axis=axes, keepdims=True))
    max_norm = clipping * np.maximum(np.sqrt(np.sum(w**2, axis=axes, keepdims=True)), eps)
    return np.where(g_norm < max_norm, g, g * max_norm / np.maximum(g_norm, 1e-6))


@pytest.mark.parametrize("clipping, eps", [(0.01, 1e-3), (0.1, 0.5)])
def test_default_axes_equal_optax_on_keras_layers(clipping, eps):
    rng = np.random.default_rng(0)
    variables = _variables(_layers().values(), rng)
    grads = _gradients(variables, rng)
    actual = helpers.apply_transform(lw.adaptive_clip(clipping, eps=eps), grads, variables)
    expected = _optax(grads, variables, clipping=clipping, eps=eps)
    clipped = kept = 0
    for a, e, g, v in zip(actual, expected, grads, variables):
        np.testing.assert_allclose(a, e, rtol=1e-6, atol=1e-12, err_msg=v.path)
        clipped += np.sum(e != g)
        kept += np.sum(e == g)
    # Both branches of the formula are exercised.
    assert clipped >= 10 and kept >= 10


def test_default_unit_axes():
    cases = {
        (): None,
        (5,): None,
        (1, 5): None,  # a Dense kernel with one input: NFNets' squeeze rule
        (4, 5): (0,),
        (6, 3, 4): (0,),
        (3, 3, 3, 4): (0, 1, 2),
        (2, 2, 2, 2, 3): (0, 1, 2, 3),
        (2, 2, 2, 2, 2, 3): (0, 1, 2, 3, 4),
    }
    assert {shape: default_unit_axes(shape) for shape in cases} == cases


def test_conv1d_and_attention_output_with_axis_match_per_output_unit_formula():
    """Output on the last axis of a rank-3 kernel: `axis=(0, 1)`, written
    either way, is one unit per output channel (optax's default would be
    axis 0 there); the bias is one unit."""
    rng = np.random.default_rng(1)
    conv1d = helpers.built(keras.layers.Conv1D(5, 3), (None, 8, 4))  # (3, 4, 5)
    out_proj = helpers.built(  # (heads, dim, out) = (2, 3, 6), as MultiHeadAttention's output
        keras.layers.EinsumDense("abcd,cde->abe", output_shape=(None, 6), bias_axes="e"),
        (None, 7, 2, 3),
    )
    variables = _variables([conv1d, out_proj], rng)
    grads = _gradients(variables, rng)
    for axis in [(0, 1), (-3, -2), [1, 0]]:
        actual = helpers.apply_transform(lw.adaptive_clip(0.02, axis=axis), grads, variables)
        for a, g, v in zip(actual, grads, variables):
            axes = (0, 1) if len(v.shape) == 3 else None
            np.testing.assert_allclose(a, _agc_numpy(g, _numpy(v), 0.02, 1e-3, axes), rtol=1e-6, atol=1e-12)
    kernels = [conv1d.kernel, out_proj.kernel]
    optax_ref = _optax(grads[0::2], kernels, clipping=0.02, axis=(0, 1))
    for a, e, g in zip(actual[0::2], optax_ref, grads[0::2]):
        np.testing.assert_allclose(a, e, rtol=1e-6, atol=1e-12)
        assert np.any(a != g) and np.any(a == g)


def test_zero_gradient_stays_zero_and_zero_weights_use_eps():
    w = keras.Variable(np.zeros((3, 2), "float32"), name="w")
    zero, big = np.zeros((3, 2), "float32"), np.full((3, 2), 10.0, "float32")
    (out,) = helpers.apply_transform(lw.adaptive_clip(0.1, eps=0.5), [zero], [w])
    np.testing.assert_array_equal(out, 0.0)
    (out,) = helpers.apply_transform(lw.adaptive_clip(0.1, eps=0.5), [big], [w])
    # Each column clipped to norm 0.1 * 0.5.
    np.testing.assert_allclose(np.linalg.norm(out, axis=0), [0.05, 0.05], rtol=1e-6)


def test_no_variable_selected_is_a_no_op():
    # What a rule whose selection is empty this step hands its transforms.
    assert lw.adaptive_clip()([], []) == []
    assert lw.centralize()([], []) == []


def test_half_precision_gradient_keeps_its_dtype():
    w = keras.Variable(np.ones((300, 2), "float32"), name="w")
    g = keras.ops.full((300, 2), 100.0, dtype="float16")  # sum of squares > float16 max
    (out,) = lw.adaptive_clip(0.01)([g], [w])
    assert keras.backend.standardize_dtype(out.dtype) == "float16"
    # Column norm clipped to 0.01 * sqrt(300).
    np.testing.assert_allclose(_numpy(out).astype("float32"), 0.01, rtol=1e-3)


# Each bad argument and the start of the error it gets.
BAD_ARGUMENTS = [
    ({"clipping": 0.0}, "`clipping` must be a finite number > 0. Received: clipping=0.0"),
    ({"clipping": -1.0}, "`clipping` must be a finite number > 0"),
    ({"clipping": float("inf")}, "`clipping` must be a finite number > 0"),
    ({"clipping": float("nan")}, "`clipping` must be a finite number > 0"),
    ({"clipping": "0.01"}, "`clipping` must be a finite number > 0"),
    ({"eps": -1e-3}, "`eps` must be a finite number >= 0. Received: eps=-0.001"),
    ({"eps": float("nan")}, "`eps` must be a finite number >= 0"),
    ({"axis": ()}, r"`axis` must be None, an int or a non-empty tuple of distinct ints. Received: axis=\(\)"),
    ({"axis": (0, 0)}, "`axis` must be None, an int"),
    ({"axis": 1.0}, "`axis` must be None, an int"),
    ({"axis": True}, "`axis` must be None, an int"),
    ({"axis": "0"}, "`axis` must be None, an int"),
]


def test_bad_arguments_fail_early():
    for kwargs, message in BAD_ARGUMENTS:
        with pytest.raises(ValueError, match=message):
            lw.adaptive_clip(**kwargs)


def test_axis_that_a_variable_lacks_names_it():
    w = keras.Variable(np.ones((3, 2), "float32"), name="kernel")
    for axis in [(0, 2), (0, -2)]:  # out of range; the same axis twice
        with pytest.raises(ValueError, match=r"`axis` must name distinct axes .* 'kernel' of shape \(3, 2\)"):
            lw.adaptive_clip(axis=axis)([keras.ops.ones((3, 2))], [w])


def test_serialization_round_trip():
    for transform in [lw.adaptive_clip(), lw.adaptive_clip(0.05, eps=0.0, axis=(0, 1)),
                      lw.adaptive_clip(axis=-1)]:
        config = keras.saving.serialize_keras_object(transform)
        assert config["registered_name"] == "layerwise>AdaptiveClip"
        restored = keras.saving.deserialize_keras_object(config)
        assert type(restored) is type(transform)
        assert restored.get_config() == transform.get_config()
        assert restored.axis == transform.axis


def test_runs_once_per_real_step_on_the_accumulated_gradient():
    """Two micro-steps: one update by SGD(lr=1) with AGC of the mean
    gradient, not the mean of the micro-steps' clipped gradients."""
    rng = np.random.default_rng(2)
    variables = _variables([helpers.built(keras.layers.Dense(4, name="d"), (None, 3))], rng)
    w0 = [_numpy(v) for v in variables]
    micro = [_gradients(variables, rng) for _ in range(2)]
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.SGD(1.0), [lw.Rule(".*", gradient=lw.adaptive_clip(0.05))],
        accumulate_steps=2,
    )
    opt.build(variables)
    for grads in micro:
        opt.apply([keras.ops.convert_to_tensor(g) for g in grads], variables)
    assert int(_numpy(opt.iterations)) == 1
    mean = [(a + b) / 2 for a, b in zip(*micro)]
    clipped_mean = _optax(mean, [keras.Variable(w) for w in w0], clipping=0.05)
    per_micro = [_optax(g, [keras.Variable(w) for w in w0], clipping=0.05) for g in micro]
    for v, w, expected in zip(variables, w0, clipped_mean):
        np.testing.assert_allclose(_numpy(v), w - expected, rtol=1e-6, atol=1e-7)
    # The alternative is measurably different: the check is not vacuous.
    alternative = [(a + b) / 2 for a, b in zip(*per_micro)]
    assert max(np.max(np.abs(e - a)) for e, a in zip(clipped_mean, alternative)) > 1e-3


def test_saved_model_reloads_the_transforms_and_continues_identically(tmp_path):
    def rules():
        return [
            lw.Rule("l0/kernel", gradient=[lw.centralize(), lw.adaptive_clip(0.02, axis=0)], name="l0"),
            lw.Rule("l[12]/.*", gradient=lw.adaptive_clip(0.01, eps=1e-2), name="rest"),
        ]

    model = helpers.mlp()
    model.compile(lw.LayerwiseOptimizer(keras.optimizers.SGD(0.1), rules()), "mse")
    model.optimizer.build(model.trainable_variables)
    path = os.path.join(tmp_path, "agc.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    for rule, saved in zip(loaded.optimizer.rules, rules()):
        assert [type(t) for t in rule.gradient] == [type(t) for t in saved.gradient]
        assert [t.get_config() for t in rule.gradient] == [t.get_config() for t in saved.gradient]
    # One step with the same gradients (an eager `apply`: a train step
    # would add a compilation per model).
    before = helpers.weights(model)
    grads = [np.random.default_rng(3).normal(size=w.shape).astype("float32") for w in before]
    for m in (model, loaded):
        m.optimizer.apply([keras.ops.convert_to_tensor(g) for g in grads], m.trainable_variables)
    helpers.assert_weights_close(helpers.weights(loaded), helpers.weights(model), rtol=1e-6, atol=1e-7)
    # The transforms acted where a rule selects: plain SGD moves by 0.1 * g.
    for v, b, a, g in zip(model.weights, before, helpers.weights(model), grads):
        plain = np.allclose(b - a, 0.1 * g, rtol=1e-5, atol=1e-6)
        assert plain == (v.path == "l0/bias"), v.path
