"""`SetLearningRate` against a plain optimizer at `learning_rate * scale`."""

import keras
import numpy as np
import pytest
from keras import ops

from layerwise.reparam.set_learning_rate import SetLearningRate

SCALE, LR = 0.1, 0.01


def np_(x):
    return ops.convert_to_numpy(x)


def _data():
    rng = np.random.default_rng(0)
    return rng.random((16, 4), "float32"), rng.random((16, 2), "float32")


def _model(wrap=None):
    """Dense(8) -> Dense(2); `wrap` wraps the first layer."""
    first = keras.layers.Dense(8, activation="tanh", name="first")
    layer = wrap(first) if wrap else first
    model = keras.Sequential(
        [keras.Input((4,)), layer, keras.layers.Dense(2, name="second")]
    )
    return model, first


def _train_pair(wrapped_opt, plain_opt, jit_compile, steps=5, optimizer="sgd"):
    """Wrapped model at LR vs plain model with only the first layer at LR*SCALE."""
    x, y = _data()
    plain, plain_first = _model()
    wrapped, first = _model(lambda l: SetLearningRate(l, SCALE, optimizer))
    wrapped.layers[0].set_weights(plain_first.get_weights())
    wrapped.layers[1].set_weights(plain.layers[1].get_weights())
    # The plain model's first layer trains at LR*SCALE, its second at LR:
    # compare the first layers only, with the second layer frozen in both.
    for m in (plain, wrapped):
        m.layers[1].trainable = False
    wrapped.compile(wrapped_opt, "mse", jit_compile=jit_compile)
    plain.compile(plain_opt, "mse", jit_compile=jit_compile)
    start = plain_first.get_weights()
    for _ in range(steps):
        wrapped.train_on_batch(x, y)
        plain.train_on_batch(x, y)
    return wrapped.layers[0].get_weights(), plain_first.get_weights(), start


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_learns_at_scale_through_c_squared(momentum, jit_compile):
    got, expected, _ = _train_pair(
        keras.optimizers.SGD(LR, momentum=momentum),
        keras.optimizers.SGD(LR * SCALE, momentum=momentum),
        jit_compile,
    )
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_adam_equals_adam_at_scaled_rate_with_epsilon_over_c(jit_compile):
    eps = 1e-3  # large, so that a wrong epsilon would show
    got, expected, _ = _train_pair(
        keras.optimizers.Adam(LR, epsilon=eps),
        keras.optimizers.Adam(LR * SCALE, epsilon=eps / SCALE),
        jit_compile,
        optimizer="adaptive",
    )
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_adam_deviation_from_exact_scaling_is_the_epsilon_effect():
    """Keras' default epsilon: a deviation well above rounding, below 50%.

    Relative to how far the weights moved (5 steps, scale 0.1) it is 2e-2 to
    1.3e-1 depending on the backend's initial weights: largest for weights
    whose gradients are so small that `sqrt(v)` is near `epsilon / c`.
    `examples/set_learning_rate_adam_epsilon.py` prints a table.
    """
    got, expected, start = _train_pair(
        keras.optimizers.Adam(LR),
        keras.optimizers.Adam(LR * SCALE),
        False,
        optimizer="adaptive",
    )
    moved = max(np.abs(e - s).max() for e, s in zip(expected, start))
    deviation = max(np.abs(g - e).max() for g, e in zip(got, expected))
    assert 1e-5 < deviation / moved < 0.5


def test_adamw_weight_decay_acts_on_phi(jit_compile):
    """Decoupled decay on phi is decay `weight_decay / scale` at LR*SCALE."""
    eps, wd = 1e-7, 0.5
    got, expected, _ = _train_pair(
        keras.optimizers.AdamW(LR, weight_decay=wd, epsilon=eps),
        keras.optimizers.AdamW(LR * SCALE, weight_decay=wd / SCALE, epsilon=eps / SCALE),
        jit_compile,
        optimizer="adaptive",
    )
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_outputs_equal_the_plain_layer_with_the_same_weights():
    x, _ = _data()
    plain, plain_first = _model()
    wrapped, _ = _model(lambda l: SetLearningRate(l, 0.37))
    wrapped.layers[0].set_weights(plain_first.get_weights())
    wrapped.layers[1].set_weights(plain.layers[1].get_weights())
    np.testing.assert_allclose(
        np_(wrapped(x)), np_(plain(x)), rtol=1e-6, atol=1e-7
    )


def test_built_layer_is_refused_and_left_as_it_was(tmp_path):
    """In place, the layer's own variables would hold phi; it is refused
    and the layer still speaks theta, with no extra weight."""
    model, first = _model()
    before = first.get_weights()
    with pytest.raises(ValueError) as info:
        SetLearningRate(first, SCALE)
    message = str(info.value)
    assert "`layer` must be a new layer, not built yet" in message
    assert "layerwise.Rule(layer, lr_scale=0.1)" in message
    assert "keras.models.clone_model" in message
    assert "\x1b" not in message
    assert len(first.weights) == 2
    for a, b in zip(first.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    model.save(str(tmp_path / "model.keras"))  # Nothing parametrized.


def test_layer_built_outside_its_wrapper_is_refused():
    """A model calling the layer, not its wrapper, would train it at the
    optimizer's rate: building it there raises."""
    first = keras.layers.Dense(8, name="first")
    SetLearningRate(first, SCALE)
    model = keras.Sequential([first, keras.layers.Dense(2)])
    with pytest.raises(ValueError) as info:
        model.build((None, 4))
    message = str(info.value)
    assert "belongs to the `SetLearningRate` wrapper" in message
    assert "\x1b" not in message


def slow_first(layer):
    """The documented recipe for a built model: wrap a copy of the layer."""
    if layer.name != "first":
        return layer  # Shared with the original model.
    copy = layer.__class__.from_config(layer.get_config())
    return SetLearningRate(copy, SCALE, "sgd", name="first_slow")


def test_clone_model_recipe_gives_a_built_model_the_rate(jit_compile):
    x, y = _data()
    model, first = _model()
    reference, _ = _model()
    reference.set_weights(model.get_weights())
    slow = keras.models.clone_model(model, clone_function=slow_first)
    slow.get_layer("first_slow").set_weights(first.get_weights())
    np.testing.assert_allclose(np_(slow(x)), np_(model(x)), rtol=1e-6)
    for m in (slow, reference):
        m.layers[-1].trainable = False
    slow.compile(keras.optimizers.SGD(LR), "mse", jit_compile=jit_compile)
    reference.compile(
        keras.optimizers.SGD(LR * SCALE), "mse", jit_compile=jit_compile
    )
    slow.train_on_batch(x, y)
    reference.train_on_batch(x, y)
    np.testing.assert_allclose(
        np_(slow(x)), np_(reference(x)), rtol=1e-5, atol=1e-7
    )


def test_set_scale_keeps_outputs_and_changes_factor():
    x, _ = _data()
    model, _ = _model(lambda l: SetLearningRate(l, 0.1, "sgd"))
    wrapper = model.layers[0]
    before = np_(model(x))
    weights = wrapper.get_weights()
    wrapper.set_scale(0.01)
    assert wrapper.scale == pytest.approx(0.01)
    np.testing.assert_allclose(np_(model(x)), before, rtol=1e-5, atol=1e-7)
    for a, b in zip(wrapper.get_weights(), weights):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_weights_speak_theta():
    layer = keras.layers.Dense(3)
    wrapper = SetLearningRate(layer, 0.25)
    wrapper.build((None, 4))
    theta = [np.random.rand(4, 3).astype("float32"), np.ones(3, "float32")]
    wrapper.set_weights(theta)
    np.testing.assert_allclose(np_(layer._kernel), theta[0] / 0.25, rtol=1e-6)
    for a, b in zip(wrapper.get_weights(), theta):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_save_and_load(tmp_path, jit_compile):
    x, y = _data()
    model, _ = _model(lambda l: SetLearningRate(l, 0.2, "sgd"))
    model.compile(keras.optimizers.SGD(LR), "mse", jit_compile=jit_compile)
    model.fit(x, y, epochs=2, verbose=0)
    model.layers[0].set_scale(0.05)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    wrapper = loaded.layers[0]
    assert isinstance(wrapper, SetLearningRate)
    assert wrapper.scale == pytest.approx(0.05)
    np.testing.assert_allclose(np_(loaded(x)), np_(model(x)), rtol=1e-6)
    for a, b in zip(wrapper.get_weights(), model.layers[0].get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"scale": 0.0}, "`scale` must be a positive number"),
        ({"scale": "fast"}, "`scale` must be a positive number"),
        ({"scale": 0.1, "optimizer": "adam"}, "`optimizer` must be one of"),
    ],
)
def test_invalid_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SetLearningRate(keras.layers.Dense(2), **kwargs)


@pytest.mark.parametrize("built", [False, True])
def test_wrapping_twice_raises(built):
    layer = keras.layers.Dense(2)
    wrapper = SetLearningRate(layer, 0.1)
    if built:
        wrapper.build((None, 3))
    with pytest.raises(ValueError, match="already has a `SetLearningRate`"):
        SetLearningRate(layer, 0.5)
