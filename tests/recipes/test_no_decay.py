"""`no_decay`: biases and normalization parameters of keras-hub backbones
(BERT, Gemma with its own RMSNormalization, ViT) and of custom layers,
equality with Keras' own `exclude_from_weight_decay`, saving, bad input."""

import re

import keras
import numpy as np
import pytest

import layerwise as lw
from layerwise.recipes.no_decay import no_decay
from tests import helpers


def _backbone(name):
    keras_hub = pytest.importorskip("keras_hub")
    if name == "bert":
        return keras_hub.models.BertBackbone(
            vocabulary_size=100, num_layers=2, num_heads=2, hidden_dim=16,
            intermediate_dim=32, max_sequence_length=16)
    if name == "gemma":
        return keras_hub.models.GemmaBackbone(
            vocabulary_size=100, num_layers=2, num_query_heads=2, num_key_value_heads=1,
            hidden_dim=16, intermediate_dim=32, head_dim=8)
    return keras_hub.models.ViTBackbone(
        image_shape=(32, 32, 3), patch_size=8, num_layers=2, num_heads=2,
        hidden_dim=16, mlp_dim=32)


# Written from the architectures, not from the code under test: which paths
# are norm parameters or biases, and how many there are (2 layers each).
EXPECTED = {
    # embeddings norm (2) + per layer: 2 norms x (gamma, beta) + 6 biases
    # (q, k, v, attention output, two feedforward) = 10; pooler bias (1).
    "bert": (r".*layer_norm/(gamma|beta)|.*/bias", 2 + 2 * 10 + 1),
    # Gemma has no biases: 2 RMSNorm scales per block + the final one.
    "gemma": (r".*_norm/scale|final_normalization/scale", 2 * 2 + 1),
    # patch conv bias (1) + per block: 2 norms x 2 + 6 biases = 10; final ln (2).
    "vit": (r".*/ln(_\d)?/(gamma|beta)|.*/bias", 1 + 2 * 10 + 2),
}
# ViT: its position embedding and the class token, held by the
# `ViTPatchingAndEmbedding` layer (timm skips decay on `cls_token` too).
EMBEDDINGS = {"bert": 3, "gemma": 1, "vit": 2}


@pytest.mark.parametrize("name", ["bert", "gemma", "vit"])
def test_every_norm_and_bias_of_keras_hub_backbones_and_no_kernel(name):
    model = _backbone(name)
    pattern, count = EXPECTED[name]
    rule = no_decay(model)
    selected = set(rule.selector.paths)
    expected = {v.path for v in model.trainable_variables if re.fullmatch(pattern, v.path)}
    assert selected == expected
    assert len(selected) == count
    assert not any(path.endswith("kernel") for path in selected)
    assert rule.weight_decay == 0.0 and rule.name == "no_decay"

    with_embeddings = set(no_decay(model, embeddings=True).selector.paths)
    added = with_embeddings - selected
    assert len(added) == EMBEDDINGS[name]
    assert all(path.endswith(("embeddings", "class_token")) for path in added)


class _RMSNorm(keras.layers.Layer):
    """A custom normalization: recognized by what it computes."""

    def build(self, shape):
        self.scale = self.add_weight(shape=shape[-1:], initializer="ones", name="scale")

    def call(self, x):
        return x * keras.ops.rsqrt(keras.ops.mean(x * x, axis=-1, keepdims=True) + 1e-6) * self.scale


class _Scale(keras.layers.Layer):
    """A per-feature scale, `x * w`: not a normalization."""

    def build(self, shape):
        self.w = self.add_weight(shape=shape[-1:], initializer="ones", name="w")

    def call(self, x):
        return x * self.w


def _custom(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6,))
    x = keras.layers.Dense(8, name="hidden")(inputs)
    x = _RMSNorm(name="rms")(x)
    x = _Scale(name="scale")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Dense(8, use_bias=False, name="no_bias")(x)
    x = keras.layers.GroupNormalization(groups=2, name="gn")(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="head")(x))


def test_custom_normalizations_are_caught_and_scales_are_not():
    rule = no_decay(_custom())
    assert rule.selector.paths == (
        "hidden/bias", "rms/scale", "bn/gamma", "bn/beta", "gn/gamma", "gn/beta", "head/bias")


def test_decay_equals_keras_exclude_from_weight_decay():
    """Reference: AdamW told by Keras itself to skip the same variables."""
    model = _custom()
    rule = no_decay(model)
    opt = lw.LayerwiseOptimizer(keras.optimizers.AdamW(0.05, weight_decay=0.5), [rule])
    reference = _custom()
    adamw = keras.optimizers.AdamW(0.05, weight_decay=0.5)
    adamw.exclude_from_weight_decay(
        var_list=[v for v in reference.trainable_variables if v.path in rule.selector.paths])
    rng = np.random.default_rng(0)
    for _ in range(2):
        grads = [keras.ops.convert_to_tensor(rng.normal(size=v.shape), "float32")
                 for v in model.trainable_variables]
        opt.apply(grads, model.trainable_variables)
        adamw.apply(grads, reference.trainable_variables)
    helpers.assert_weights_close(helpers.weights(model), helpers.weights(reference))
    rows = {r["path"]: r["weight_decay"] for r in opt.summary_rows()}
    assert rows["hidden/kernel"] == pytest.approx(0.5) and rows["scale/w"] == pytest.approx(0.5)
    assert rows["rms/scale"] is None and rows["hidden/bias"] is None


def test_rule_round_trips_through_model_save_and_load(tmp_path):
    model = _custom()
    rule = no_decay(model, embeddings=True)
    model.compile(lw.LayerwiseOptimizer(keras.optimizers.AdamW(0.05), [rule]), "mse")
    model.optimizer.build(model.trainable_variables)
    path = str(tmp_path / "no_decay.keras")
    model.save(path)
    loaded = keras.models.load_model(
        path, custom_objects={"_RMSNorm": _RMSNorm, "_Scale": _Scale})
    assert loaded.optimizer.rules[0].get_config() == model.optimizer.rules[0].get_config()


def test_bad_input_fails_early_in_keras_form():
    with pytest.raises(TypeError, match="`embeddings` must be True or False"):
        no_decay(_custom(), embeddings="yes")
    with pytest.raises(ValueError, match="`model` must be built"):
        no_decay(keras.Sequential([keras.layers.Dense(2)]))
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, use_bias=False)])
    with pytest.raises(ValueError, match="must have a bias or normalization variable"):
        no_decay(plain)
