"""`parametrize`: the layer computes with `fn(phi)`, differentiably."""

import keras
import numpy as np
import pytest
from keras import ops

from layerwise.reparam.normalizations import spectral_norm
from layerwise.reparam.normalizations import weight_norm
from layerwise.reparam.parametrize import Parametrized
from layerwise.reparam.parametrize import parametrize
from layerwise.reparam.parametrize import remove_parametrization


@keras.saving.register_keras_serializable(package="layerwise_tests")
def double(x):
    return 2.0 * x


def np_(x):
    return ops.convert_to_numpy(x)


LAYERS = {
    "dense": (lambda: keras.layers.Dense(3), (5, 4), "kernel"),
    "conv2d": (lambda: keras.layers.Conv2D(3, 2), (2, 5, 5, 2), "kernel"),
    "embedding": (lambda: keras.layers.Embedding(7, 3), (4, 2), "embeddings"),
    "layer_norm_beta": (lambda: keras.layers.LayerNormalization(), (5, 4), "beta"),
}


def _inputs(shape):
    if len(shape) == 2 and shape == (4, 2):
        return np.random.randint(0, 7, shape)
    return np.random.rand(*shape).astype("float32")


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_output_equals_layer_with_weight_replaced(kind):
    make, shape, name = LAYERS[kind]
    x = _inputs(shape)
    layer, reference = make(), make()
    layer.build(shape)
    reference.build(shape)
    reference.set_weights(layer.get_weights())
    variable = getattr(reference, name)
    variable.assign(np.tanh(np_(variable)) + 0.5)
    parametrize(layer, name, lambda w: ops.tanh(w) + 0.5)
    np.testing.assert_allclose(np_(layer(x)), np_(reference(x)), atol=1e-6)


def test_several_weights_of_one_layer():
    layer = keras.layers.Dense(3)
    layer.build((None, 4))
    kernel, bias = np_(layer.kernel), np.full(3, 0.7, "float32")
    layer.bias.assign(bias)
    parametrize(layer, "kernel", ops.tanh)
    parametrize(layer, "bias", ops.square)
    x = _inputs((5, 4))
    expected = x @ np.tanh(kernel) + bias**2
    np.testing.assert_allclose(np_(layer(x)), expected, rtol=1e-5)


def test_model_built_before_uses_parametrization(jit_compile):
    inputs = keras.Input((4,))
    dense = keras.layers.Dense(3)
    model = keras.Model(inputs, dense(inputs))
    x = _inputs((5, 4))
    parametrize(dense, "kernel", double)
    model.compile("sgd", "mse", jit_compile=jit_compile)
    expected = x @ (2 * np_(dense._kernel)) + np_(dense.bias)
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, rtol=1e-5)


def test_gradients_equal_analytic_weight_norm_gradients(jit_compile):
    """One SGD(lr=1) step moves phi and g by minus their analytic gradients."""
    x, t = _inputs((6, 4)), _inputs((6, 3))
    dense = keras.layers.Dense(3, use_bias=False)
    model = keras.Sequential([keras.Input((4,)), parametrize(dense, "kernel", weight_norm())])
    model.compile(keras.optimizers.SGD(1.0), "mse", jit_compile=jit_compile)
    g_var = model.layers[0].weights[1]
    v, g = np_(dense._kernel).copy(), np_(g_var).copy()
    norm = np.linalg.norm(v, axis=0)
    theta = g * v / norm
    grad_theta = x.T @ (2 * (x @ theta - t) / t.size)
    grad_g = np.sum(grad_theta * v / norm, axis=0)
    grad_v = g / norm * (grad_theta - v / norm * grad_g)
    model.train_on_batch(x, t)
    np.testing.assert_allclose(v - np_(dense._kernel), grad_v, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(g - np_(g_var), grad_g, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("shape", [(6, 4), (3, 3, 2, 5)])
def test_spectral_norm_converges_to_largest_singular_value(shape):
    phi = np.random.randn(*shape).astype("float32")
    sn = spectral_norm()
    sn.build(shape)
    for _ in range(50):
        sn(phi, training=True)
    matrix = phi.reshape(-1, shape[-1])
    expected = np.linalg.svd(matrix, compute_uv=False)[0]
    np.testing.assert_allclose(float(np_(sn.sigma(phi))), expected, rtol=1e-4)
    normalized = np_(sn(phi)).reshape(-1, shape[-1])
    np.testing.assert_allclose(np.linalg.norm(normalized, 2), 1.0, rtol=1e-4)


def test_spectral_norm_state_updates_in_training_only():
    dense = keras.layers.Dense(3)
    layer = parametrize(dense, "kernel", spectral_norm())
    x = _inputs((5, 4))
    layer(x)
    u = np_(layer.weights[2]).copy()
    layer(x, training=False)
    np.testing.assert_array_equal(np_(layer.weights[2]), u)
    layer(x, training=True)
    assert not np.allclose(np_(layer.weights[2]), u)


def test_chained_parametrizations_compose_in_order():
    dense = keras.layers.Dense(3, use_bias=False)
    dense.build((None, 4))
    kernel = np_(dense.kernel)
    parametrize(parametrize(dense, "kernel", double), "kernel", ops.tanh)
    x = _inputs((5, 4))
    np.testing.assert_allclose(np_(dense(x)), x @ np.tanh(2 * kernel), rtol=1e-5)


def test_remove_parametrization_leaves_plain_layer_holding_fn_phi():
    dense = keras.layers.Dense(3)
    wrapper = parametrize(dense, "kernel", spectral_norm())
    x = _inputs((5, 4))
    before = np_(wrapper(x))
    plain = remove_parametrization(wrapper, "kernel")
    assert plain is dense and len(dense.weights) == 2
    assert "call" not in vars(dense)
    np.testing.assert_allclose(np_(dense(x)), before, rtol=1e-5)


def test_save_and_load_restore_parametrization(tmp_path, jit_compile):
    dense = keras.layers.Dense(3)
    model = keras.Sequential(
        [keras.Input((4,)), parametrize(parametrize(dense, "kernel", spectral_norm(2)), "bias", double)]
    )
    model.compile("adam", "mse", jit_compile=jit_compile)
    x = _inputs((5, 4))
    model.fit(x, _inputs((5, 3)), epochs=2, verbose=0)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.layers[0], Parametrized)
    np.testing.assert_allclose(np_(loaded(x)), np_(model(x)), rtol=1e-6)
    for a, b in zip(loaded.weights, model.weights):
        np.testing.assert_array_equal(np_(a), np_(b))


def test_saving_a_model_parametrized_in_place_fails_loudly(tmp_path):
    inputs = keras.Input((4,))
    dense = keras.layers.Dense(3, name="dense")
    model = keras.Model(inputs, dense(inputs))
    parametrize(dense, "kernel", double)
    with pytest.raises(ValueError, match=r"Layer 'dense' has parametrized weights \['kernel'\]"):
        model.save(str(tmp_path / "model.keras"))
    remove_parametrization(dense, "kernel")
    model.save(str(tmp_path / "model.keras"))


def test_wrapper_weights_speak_theta():
    dense = keras.layers.Dense(3)
    dense.build((None, 4))
    wrapper = parametrize(dense, "kernel", double)
    kernel = np.random.rand(4, 3).astype("float32")
    wrapper.set_weights([kernel, np.zeros(3, "float32")])
    np.testing.assert_allclose(np_(dense._kernel), kernel)  # identity inverse
    np.testing.assert_allclose(wrapper.get_weights()[0], 2 * kernel)


def test_unknown_weight_name_lists_the_weights():
    dense = keras.layers.Dense(3)
    dense.build((None, 4))
    with pytest.raises(ValueError, match=r"\['bias', 'kernel'\]. Received: name='kernal'"):
        parametrize(dense, "kernal", double)


def test_shape_changing_function_raises():
    dense = keras.layers.Dense(3)
    dense.build((None, 4))
    with pytest.raises(ValueError, match="must keep the weight's shape"):
        parametrize(dense, "kernel", ops.transpose)
