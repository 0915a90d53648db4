"""`lora_plus`: B factors at `ratio` times A's learning rate, checked
against the closed-form gradient of a LoRA layer."""

import math

import keras
import numpy as np
import pytest

import layerwise as lw
from layerwise.recipes.lora_plus import lora_factors
from layerwise.recipes.lora_plus import lora_plus


def _numpy(variable):
    return np.array(keras.ops.convert_to_numpy(variable), dtype="float64")


def _lora_model(rank=2, lora_alpha=4):
    """`Dense(5)` on 6 inputs with LoRA, B random (Keras' default is zeros,
    which would make A's first gradient zero)."""
    inputs = keras.Input((6,))
    layer = keras.layers.Dense(5, name="body")
    model = keras.Model(inputs, layer(inputs))
    layer.enable_lora(rank, lora_alpha=lora_alpha, b_initializer="random_normal")
    return model


def test_sgd_step_is_ratio_times_lr_on_b_and_lr_on_a():
    ratio, lr = 16.0, 0.05
    model = _lora_model(rank=2, lora_alpha=4)
    layer = model.get_layer("body")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 6)).astype("float32")
    t = rng.normal(size=(8, 5)).astype("float32")
    w, a, b, bias = (_numpy(v) for v in (layer._kernel, layer.lora_kernel_a,
                                         layer.lora_kernel_b, layer.bias))
    # y = x (W + s A B) + bias, s = alpha / rank; Keras' "mse" averages over
    # the batch and the outputs, so dL/dy = 2 (y - t) / (N * 5).
    s = 4 / 2
    y = x @ (w + s * a @ b) + bias
    dy = 2 * (y - t) / y.size
    grad_b = s * (x @ a).T @ dy
    grad_a = s * x.T @ dy @ b.T
    grad_bias = dy.sum(axis=0)

    optimizer = lw.LayerwiseOptimizer(keras.optimizers.SGD(lr), lora_plus(model, ratio))
    model.compile(optimizer=optimizer, loss="mse")
    model.train_on_batch(x, t)

    np.testing.assert_allclose(_numpy(layer.lora_kernel_b) - b, -ratio * lr * grad_b,
                               rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(_numpy(layer.lora_kernel_a) - a, -lr * grad_a,
                               rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(_numpy(layer.bias) - bias, -lr * grad_bias,
                               rtol=1e-4, atol=1e-7)
    np.testing.assert_array_equal(_numpy(layer._kernel), w)


def test_frozen_kernel_gets_no_slots():
    model = _lora_model()
    optimizer = lw.LayerwiseOptimizer(keras.optimizers.Adam(1e-3), lora_plus(model))
    model.compile(optimizer=optimizer, loss="mse")
    model.train_on_batch(np.ones((2, 6), "float32"), np.ones((2, 5), "float32"))
    layer = model.get_layer("body")
    trainable = model.trainable_variables
    assert not any(v is layer._kernel for v in trainable)
    # Adam's two slots for each trainable variable (A, B, bias) and nothing
    # else: scalars are counters and the learning rate, `lr_scales` the
    # rules' multipliers.
    slot_elements = sum(
        math.prod(v.shape) for v in optimizer.variables
        if len(v.shape) > 0 and v.name != "lr_scales")
    assert slot_elements == 2 * sum(math.prod(v.shape) for v in trainable)
    assert slot_elements == 2 * (6 * 2 + 2 * 5 + 5)


def test_rules_and_lora_layers():
    # Only the structure matters: zeros, as JAX compiles a random
    # initializer once per shape.
    z = {"kernel_initializer": "zeros"}
    inputs = keras.Input((3,), dtype="int32")
    x = keras.layers.Embedding(20, 8, name="embedding", embeddings_initializer="zeros")(inputs)
    x = keras.layers.EinsumDense("abc,cd->abd", (None, 8), name="einsum", **z)(x)
    x = keras.layers.Reshape((3, 8, 1))(x)
    x = keras.layers.Conv2D(4, 3, name="conv", **z)(x)
    inner = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2, name="head", **z)],
                             name="inner")
    x = inner(keras.layers.Flatten()(keras.layers.Dense(8, name="plain", **z)(
        keras.layers.GlobalAveragePooling2D()(x))))
    model = keras.Model(inputs, x)
    for name in ("embedding", "einsum", "conv"):
        model.get_layer(name).enable_lora(2, a_initializer="zeros")
    inner.get_layer("head").enable_lora(1, a_initializer="zeros")

    b_rule, a_rule = lora_plus(model, ratio=8)
    assert (b_rule.name, b_rule.lr_scale, a_rule.name, a_rule.lr_scale) == (
        "lora_plus_b", 8.0, "lora_plus_a", 1.0)
    ends = lambda rule: sorted("/".join(p.split("/")[-2:]) for p in rule.selector.paths)
    assert ends(b_rule) == ["conv/lora_kernel_b", "einsum/lora_kernel_b",
                            "embedding/lora_embeddings_b", "head/lora_kernel_b"]
    assert ends(a_rule) == ["conv/lora_kernel_a", "einsum/lora_kernel_a",
                            "embedding/lora_embeddings_a", "head/lora_kernel_a"]
    assert lora_factors(model.get_layer("plain")) is None


def test_frozen_lora_layers_are_left_out():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4, name="a"),
                              keras.layers.Dense(4, name="b"),
                              keras.layers.Dense(4, name="no_lora")])
    for layer in model.layers[:2]:
        layer.enable_lora(1, a_initializer="zeros")
    model.layers[0].trainable = False
    b_rule, a_rule = lora_plus(model)
    assert [p.split("/")[-2] for p in b_rule.selector.paths + a_rule.selector.paths] == ["b", "b"]
    model.layers[1].trainable = False
    with pytest.raises(ValueError, match="at least one trainable layer with LoRA"):
        lora_plus(model)


def test_no_lora_is_an_error():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4)])
    with pytest.raises(ValueError, match="must have at least one trainable layer with LoRA"):
        lora_plus(model)


def test_bad_ratio():
    model = _lora_model()
    for ratio, error in [(-1.0, ValueError), (math.inf, ValueError),
                         (math.nan, ValueError), ("16", TypeError), (True, TypeError)]:
        with pytest.raises(error, match="`ratio` must be a finite number >= 0"):
            lora_plus(model, ratio=ratio)


def test_unbuilt_model_is_an_error():
    with pytest.raises(ValueError, match="`model` must be built"):
        lora_plus(keras.Sequential([keras.layers.Dense(4)]))


def test_rules_survive_keras_save_and_load(tmp_path):
    # Keras saves a LoRA layer with its factors merged into the kernel and
    # reloads them as zeros; the rules find the reloaded factors by path.
    model = _lora_model()
    model.compile(optimizer=lw.LayerwiseOptimizer(keras.optimizers.Adam(1e-2),
                                                  lora_plus(model, ratio=4.0)),
                  loss="mse")
    model.optimizer.build(model.trainable_variables)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    rules = loaded.optimizer.rules
    assert [(r.name, r.lr_scale, r.selector.paths) for r in rules] == [
        (r.name, r.lr_scale, r.selector.paths) for r in model.optimizer.rules]
    layer = loaded.get_layer("body")
    assert [[v.name for v in loaded.trainable_variables if r.matches(v)] for r in rules] == [
        ["lora_kernel_b"], ["lora_kernel_a"]]
    assert rules[0].matches(layer.lora_kernel_b)
