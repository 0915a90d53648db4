"""`ScaleGradient` / `ReverseGradient` layers."""

import keras
import numpy as np
import pytest

from layerwise.layers import ReverseGradient
from layerwise.layers import ScaleGradient


def _model(gradient_layer):
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(2, use_bias=False)(inputs)
    hidden = gradient_layer(hidden)
    outputs = keras.layers.Dense(1, use_bias=False)(hidden)
    return keras.Model(inputs, outputs)


def _first_kernel_step(model, x, y):
    kernel = model.layers[1].kernel
    before = keras.ops.convert_to_numpy(kernel.value).copy()
    model.train_on_batch(x, y)
    return before - keras.ops.convert_to_numpy(kernel.value)


@pytest.mark.parametrize(
    "layer, expected",
    [(ScaleGradient(0.5), 0.5), (ReverseGradient(2.0), -2.0)],
    ids=["scale", "reverse"],
)
def test_layer_scales_gradient(layer, expected, jit_compile):
    x = np.random.rand(4, 3).astype("float32")
    y = np.random.rand(4, 1).astype("float32")
    plain = _model(keras.layers.Identity())
    model = _model(layer)
    model.set_weights(plain.get_weights())
    for m in (plain, model):
        m.compile(keras.optimizers.SGD(1.0), "mse", jit_compile=jit_compile)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model(x)), keras.ops.convert_to_numpy(plain(x))
    )
    np.testing.assert_allclose(
        _first_kernel_step(model, x, y),
        expected * _first_kernel_step(plain, x, y),
        rtol=1e-5,
        atol=1e-7,
    )


def test_factor_variable_changes_during_training(jit_compile):
    factor = keras.Variable(1.0, trainable=False, name="factor")
    model = _model(ScaleGradient(factor))
    model.compile(keras.optimizers.SGD(1.0), "mse", jit_compile=jit_compile)
    x = np.random.rand(4, 3).astype("float32")
    y = np.random.rand(4, 1).astype("float32")
    assert np.abs(_first_kernel_step(model, x, y)).max() > 0  # traced at 1
    factor.assign(0.0)
    np.testing.assert_array_equal(_first_kernel_step(model, x, y), 0.0)


@pytest.mark.parametrize("cls", [ScaleGradient, ReverseGradient])
def test_serialization_round_trip(cls, tmp_path):
    model = _model(cls(0.3))
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.layers[2], cls)
    assert loaded.layers[2].factor == 0.3


@pytest.mark.parametrize("factor", ["0.5", True, None])
def test_invalid_factor_raises(factor):
    with pytest.raises(ValueError, match="`factor` must be a float"):
        ScaleGradient(factor)
