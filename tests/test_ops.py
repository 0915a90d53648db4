"""`scale_gradient` / `reverse_gradient`: identity forward, scaled gradient."""

import keras
import numpy as np
import pytest

from layerwise import ops as lw_ops


def _sgd_step_delta(model, x, y, jit_compile):
    """One plain SGD(lr=1) step: the change of the first kernel is -grad."""
    model.compile(
        optimizer=keras.optimizers.SGD(1.0), loss="mse", jit_compile=jit_compile
    )
    before = model.layers[1].kernel.numpy().copy()
    model.train_on_batch(x, y)
    return before - model.layers[1].kernel.numpy()


def _model(transform):
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(2, use_bias=False)(inputs)
    hidden = keras.layers.Lambda(transform)(hidden)
    outputs = keras.layers.Dense(1, use_bias=False)(hidden)
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize(
    "op, factor, expected",
    [
        (lw_ops.scale_gradient, 0.25, 0.25),
        (lw_ops.scale_gradient, 0.0, 0.0),
        (lw_ops.reverse_gradient, 1.0, -1.0),
        (lw_ops.reverse_gradient, 3.0, -3.0),
    ],
)
def test_gradient_is_scaled_by_factor(op, factor, expected, jit_compile):
    x = np.random.rand(4, 3).astype("float32")
    y = np.random.rand(4, 1).astype("float32")
    plain = _model(lambda h: h)
    scaled = _model(lambda h: op(h, factor))
    scaled.set_weights(plain.get_weights())
    reference = _sgd_step_delta(plain, x, y, jit_compile)
    delta = _sgd_step_delta(scaled, x, y, jit_compile)
    np.testing.assert_allclose(delta, expected * reference, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("op", [lw_ops.scale_gradient, lw_ops.reverse_gradient])
def test_forward_is_exact_identity(op):
    x = np.array([[1e-30, -2.5, np.inf, 3e38]], dtype="float32")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(op(x, 0.5)), x)


@pytest.mark.parametrize(
    "x, factor, message",
    [
        (np.arange(3), 1.0, "`x` must be a float tensor"),
        (np.ones(3, "float32"), np.ones(2), "`factor` must be a scalar"),
    ],
)
def test_invalid_arguments_raise(x, factor, message):
    with pytest.raises(ValueError, match=message):
        lw_ops.scale_gradient(x, factor)
