"""`mup`: MuAdam's learning-rate multipliers, per layer type, and the
coordinate check (hidden activations move by a width-independent amount)."""

import functools
import importlib.util
import math
import pathlib

import keras
import numpy as np
import pytest

import layerwise as lw
from layerwise.recipes.mup import mup

BENCHMARKS = pathlib.Path(__file__).resolve().parents[2] / "benchmarks"
# Only shapes matter here; JAX compiles a random initializer once per shape
# (~0.5 s each), zeros cost nothing.
Z = {"kernel_initializer": "zeros"}


def _scales(rules, model):
    """`{path: lr_scale}` for every trainable variable (1.0 without a rule)."""
    scales = {}
    for variable in model.trainable_variables:
        scale = 1.0
        for rule in rules:
            if rule.matches(variable):
                scale *= rule.lr_scale
        scales["/".join(variable.path.split("/")[-2:])] = scale
    return scales


def _mlp(width, name="mlp", init="zeros"):
    inputs = keras.Input((16,))
    dense = functools.partial(keras.layers.Dense, kernel_initializer=init)
    x = dense(width, activation="relu", name="first")(inputs)
    x = dense(width, activation="relu", name="hidden")(x)
    x = keras.layers.LayerNormalization(name="norm")(x)
    outputs = dense(10, name="output")(x)
    return keras.Model(inputs, outputs, name=name)


def test_dense_multipliers():
    model = _mlp(512)
    rules = mup(model, _mlp(64, name="base"))
    assert _scales(rules, model) == {
        "first/kernel": 1.0,  # fan-in fixed (16)
        "first/bias": 1.0,
        "hidden/kernel": 64 / 512,  # fan-in and fan-out grew
        "hidden/bias": 1.0,
        "norm/gamma": 1.0,
        "norm/beta": 1.0,
        "output/kernel": 1.0,  # fan-out fixed (10)
        "output/bias": 1.0,
    }
    [rule] = rules
    assert rule.name == "mup_fan_in_x8"
    assert rule.lr_scale == 0.125


def test_einsum_dense_multipliers():
    def model(width, name):
        heads = 4
        inputs = keras.Input((5, 16))
        x = keras.layers.Dense(width, name="embed", **Z)(inputs)
        x = keras.layers.EinsumDense(
            "abc,cde->abde", (None, heads, width // heads), name="query", **Z)(x)
        x = keras.layers.EinsumDense(
            "abcd,cde->abe", (None, width), name="attn_out", **Z)(x)
        x = keras.layers.EinsumDense("abc,cd->abd", (None, 3), name="output", **Z)(x)
        return keras.Model(inputs, x, name=name)

    target = model(256, "m")
    scales = _scales(mup(target, model(32, "b")), target)
    # query: kernel (width, heads, width / heads), fan-in width;
    # attn_out: kernel (heads, width / heads, width), fan-in heads * width / heads.
    assert scales == {
        "embed/kernel": 1.0, "embed/bias": 1.0,
        "query/kernel": 32 / 256, "attn_out/kernel": 32 / 256,
        "output/kernel": 1.0,
    }


def test_conv2d_multipliers():
    def model(width, name):
        inputs = keras.Input((8, 8, 3))
        x = keras.layers.Conv2D(width, 3, name="stem", **Z)(inputs)
        x = keras.layers.Conv2D(2 * width, 3, name="conv", **Z)(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        x = keras.layers.Dense(4, name="output", **Z)(x)
        return keras.Model(inputs, x, name=name)

    target = model(48, "m")
    scales = _scales(mup(target, model(16, "b")), target)
    # conv: fan-in 3 * 3 * width, so the ratio is that of the channels.
    assert scales["conv/kernel"] == pytest.approx((9 * 16) / (9 * 48))
    assert {k: v for k, v in scales.items() if k != "conv/kernel"} == {
        "stem/kernel": 1.0, "stem/bias": 1.0, "conv/bias": 1.0,
        "output/kernel": 1.0, "output/bias": 1.0,
    }


def test_embedding_keeps_its_rate():
    def model(width, name):
        inputs = keras.Input((5,), dtype="int32")
        x = keras.layers.Embedding(
            100, width, name="embedding", embeddings_initializer="zeros")(inputs)
        x = keras.layers.Dense(width, name="hidden", **Z)(x)
        return keras.Model(inputs, keras.layers.Dense(3, name="output", **Z)(x), name=name)

    target = model(128, "m")
    scales = _scales(mup(target, model(32, "b")), target)
    assert scales["embedding/embeddings"] == 1.0  # fan-in: the vocabulary
    assert scales["hidden/kernel"] == 0.25


def test_pairs_auto_named_layers_by_position():
    # Built in one session, the two models' layers are `dense`... and
    # `dense_4`...: pairing does not read the names.
    def model(width):
        return keras.Sequential([keras.Input((16,)), keras.layers.Dense(width, **Z),
                                 keras.layers.Dense(width, **Z), keras.layers.Dense(2, **Z)])

    base = model(32)
    target = model(96)
    assert base.layers[0].name != target.layers[0].name
    [rule] = mup(target, base)
    assert rule.selector.paths == (target.layers[1].kernel.path,)
    assert rule.lr_scale == pytest.approx(1 / 3)


def test_several_multipliers_one_rule_each():
    def model(width, name):
        inputs = keras.Input((8,))
        x = keras.layers.Dense(width, name="a", **Z)(inputs)
        x = keras.layers.Dense(2 * width, name="b", **Z)(x)
        x = keras.layers.Dense(2 * width, name="c", **Z)(x)
        return keras.Model(inputs, keras.layers.Dense(1, name="out", **Z)(x), name=name)

    target = model(64, "m")
    rules = mup(target, model(16, "base"))
    assert [(r.name, r.lr_scale, len(r.selector.paths)) for r in rules] == [
        ("mup_fan_in_x4", 0.25, 2)
    ]
    rules = mup(target, model(32, "base"))
    assert [(r.name, r.lr_scale) for r in rules] == [("mup_fan_in_x2", 0.5)]


def test_at_base_width_or_narrower_no_rules():
    model = _mlp(64)
    assert mup(model, _mlp(64, name="base")) == []
    # Only growth is scaled: `base_model` wider is μP's width_mult < 1,
    # which these rules leave to the inner optimizer.
    assert mup(model, _mlp(256, name="base")) == []


def test_weight_decay_keeps_muadamw_product():
    [rule] = mup(_mlp(256), _mlp(64, name="base"), weight_decay=0.01)
    # MuAdamW: lr / 4 and weight decay * 4, so their product is unchanged.
    assert rule.lr_scale == 0.25
    assert rule.weight_decay == pytest.approx(0.04)
    assert rule.lr_scale * rule.weight_decay == pytest.approx(0.01)


def test_frozen_variables_get_no_rule():
    model = _mlp(256)
    model.get_layer("hidden").trainable = False
    assert mup(model, _mlp(64, name="base")) == []


def test_architecture_mismatch_is_an_error():
    deeper = keras.Sequential([keras.Input((16,))]
                              + [keras.layers.Dense(64, **Z) for _ in range(4)]
                              + [keras.layers.Dense(10, **Z)])
    with pytest.raises(ValueError, match="with 8 weights and `base_model` with 10"):
        mup(_mlp(256), deeper)
    conv = keras.Sequential([keras.Input((4, 16)), keras.layers.Conv1D(64, 1, **Z),
                             keras.layers.Dense(64, **Z), keras.layers.LayerNormalization(),
                             keras.layers.Dense(10, **Z)])
    with pytest.raises(ValueError, match="the layers differ.*Conv1D"):
        mup(_mlp(256), conv)


def test_einsum_layout_mismatch_is_an_error():
    def model(equation, name):
        inputs = keras.Input((5, 8))
        x = keras.layers.EinsumDense(equation, (None, 16), name="e", **Z)(inputs)
        return keras.Model(inputs, x, name=name)

    with pytest.raises(ValueError, match="the layouts differ"):
        mup(model("abc,cd->abd", "m"), model("abc,dc->abd", "b"))


def test_unknown_layout_that_grows_twice_is_an_error():
    class Bilinear(keras.layers.Layer):
        def build(self, input_shape):
            self.w = self.add_weight(
                shape=(input_shape[-1], input_shape[-1]), initializer="zeros", name="w")

        def call(self, x):
            return x @ self.w

    def model(width, name):
        inputs = keras.Input((4,))
        x = keras.layers.Dense(width, **Z)(inputs)
        return keras.Model(inputs, Bilinear()(x), name=name)

    with pytest.raises(ValueError, match="must know the fan-in.*Bilinear"):
        mup(model(32, "m"), model(8, "b"))


def test_bad_arguments():
    model = _mlp(128)
    with pytest.raises(TypeError, match="`base_model` must be a `keras.Model`"):
        mup(model, base_model="mlp")
    unbuilt = keras.Sequential([keras.layers.Dense(4, **Z)])
    with pytest.raises(ValueError, match="`base_model` must be built"):
        mup(model, unbuilt)
    with pytest.raises(ValueError, match="`model` must be built"):
        mup(unbuilt, model)
    for weight_decay in (-0.1, math.inf):
        with pytest.raises(ValueError, match="`weight_decay` must be a finite number"):
            mup(model, _mlp(64, name="b"), weight_decay=weight_decay)


def test_rules_survive_keras_save_and_load(tmp_path):
    model = _mlp(128)
    rules = mup(model, _mlp(32, name="base"))
    model.compile(optimizer=lw.LayerwiseOptimizer(keras.optimizers.Adam(1e-3), rules),
                  loss="mse")
    model.optimizer.build(model.trainable_variables)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    [rule] = loaded.optimizer.rules
    assert (rule.name, rule.lr_scale, rule.selector.paths) == (
        "mup_fan_in_x4", 0.25, rules[0].selector.paths)
    assert [v.path for v in loaded.trainable_variables if rule.matches(v)] == [
        loaded.get_layer("hidden").kernel.path]


def _coordinate_check_module():
    spec = importlib.util.spec_from_file_location(
        "mup_coordinate_check", BENCHMARKS / "mup_coordinate_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_coordinate_check_flat_with_mup_growing_without():
    # The benchmark's check, smaller: widths 64 and 512, 5 Adam steps. With
    # `mup` the change of the last hidden layer's activations stays within
    # 1.5x across an 8x width; without it, it grows at least 2x (the
    # benchmark, 10 steps: 1.34x vs 2.74x on JAX). At the base width, 64,
    # `mup` returns no rules: one run serves both.
    check = _coordinate_check_module()
    base = check.activation_change(64, steps=5, with_mup=False)[-1]
    with_mup = check.activation_change(512, steps=5, with_mup=True)[-1]
    without = check.activation_change(512, steps=5, with_mup=False)[-1]
    assert 1 / 1.5 <= with_mup / base <= 1.5, (base, with_mup)
    assert 2.0 <= without / base <= 8.0, (base, without)
