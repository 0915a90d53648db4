"""`layer_decay`, `discriminative` and block detection: the formulas on
Sequential, Functional, nested and keras-hub-like models, explicit blocks,
warm-up, unassigned variables, errors, and a save/load round trip."""

import os

import keras
import numpy as np
import pytest

import layerwise as lw
from layerwise.recipes.blocks import detect_blocks
from layerwise.recipes.layer_decay import discriminative
from layerwise.recipes.layer_decay import layer_decay
from layerwise.optim.schedules import LinearWarmup
from tests import helpers


def _names(blocks):
    return [[layer.name for layer in block] for block in blocks]


def _scales(model, rules, lr=1.0):
    """The per-variable multiplier the optimizer actually uses."""
    opt = lw.LayerwiseOptimizer(keras.optimizers.SGD(lr), rules)
    opt.build(model.trainable_variables)
    return {r["path"]: r["lr_scale"] for r in opt.summary_rows()}, opt


def _sequential():
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, name="conv1"),
            keras.layers.Conv2D(4, 3, name="conv2"),
            keras.layers.MaxPooling2D(name="pool"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(8, name="dense"),
            keras.layers.Dense(3, name="head"),
        ],
        name="seq",
    )


def _branched():
    inputs = keras.Input((4,))
    a = keras.layers.Dense(4, name="a")(inputs)
    b1 = keras.layers.Dense(4, name="b1")(a)
    b2 = keras.layers.Dense(4, name="b2")(keras.layers.Dropout(0.1)(a))
    x = keras.layers.Concatenate()([b1, b2])
    return keras.Model(inputs, keras.layers.Dense(2, name="out")(x))


class TransformerLayer(keras.layers.Layer):
    """A stand-in for keras-hub's `TransformerEncoder`."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.ffn = keras.layers.Dense(4, name="ffn")
        self.norm = keras.layers.LayerNormalization(name="norm")

    def build(self, input_shape):
        self.ffn.build(input_shape)
        self.norm.build(input_shape)

    def call(self, x):
        return self.norm(x + self.ffn(x))


def _hub_like(n_layers=3):
    """A classifier on a backbone with `transformer_layer_0..n-1`, as in keras-hub."""
    tokens = keras.Input((5,), dtype="int32")
    x = keras.layers.Embedding(11, 4, name="token_embedding")(tokens)
    x = keras.layers.LayerNormalization(name="embeddings_layer_norm")(x)
    for i in range(n_layers):
        x = TransformerLayer(name=f"transformer_layer_{i}")(x)
    backbone = keras.Model(tokens, keras.layers.LayerNormalization(name="final_norm")(x), name="backbone")
    inputs = keras.Input((5,), dtype="int32")
    pooled = keras.layers.GlobalAveragePooling1D(name="pool")(backbone(inputs))
    return keras.Model(inputs, keras.layers.Dense(2, name="head")(pooled), name="classifier")


# ----------------------------------------------------------------------
# The formula on each kind of model.


def test_sequential_blocks_and_decay_formula():
    model = _sequential()
    assert _names(detect_blocks(model)) == [["conv1"], ["conv2"], ["dense"], ["head"]]
    rules = layer_decay(model, decay=0.75)
    assert [r.name for r in rules] == ["conv1", "conv2", "dense", "head"]
    assert [r.lr_scale for r in rules] == pytest.approx([0.75**3, 0.75**2, 0.75, 1.0])
    scales, _ = _scales(model, rules)
    assert scales["seq/conv1/kernel"] == pytest.approx(0.75**3, rel=1e-6)
    assert scales["seq/dense/bias"] == pytest.approx(0.75, rel=1e-6)
    assert scales["seq/head/kernel"] == 1.0


def test_functional_blocks_follow_topological_depth():
    model = _branched()
    # b1 and b2 sit at the same depth: one block.
    assert _names(detect_blocks(model)) == [["a"], ["b1", "b2"], ["out"]]
    rules = layer_decay(model, decay=0.5)
    assert [r.name for r in rules] == ["a", "block_1", "out"]
    scales, _ = _scales(model, rules)
    assert scales == pytest.approx(
        {"a/kernel": 0.25, "a/bias": 0.25, "b1/kernel": 0.5, "b1/bias": 0.5,
         "b2/kernel": 0.5, "b2/bias": 0.5, "out/kernel": 1.0, "out/bias": 1.0}
    )


def test_nested_models_are_expanded_in_place():
    encoder = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(4, name="e1"), keras.layers.Dense(4, name="e2")],
        name="encoder",
    )
    inputs = keras.Input((4,))
    x = keras.layers.Dense(4, name="stem")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(encoder(x)))
    assert _names(detect_blocks(model)) == [["stem"], ["e1"], ["e2"], ["head"]]
    scales, _ = _scales(model, layer_decay(model, decay=0.5))
    assert scales["stem/kernel"] == pytest.approx(0.125)
    assert scales["encoder/e1/kernel"] == pytest.approx(0.25)
    assert scales["encoder/e2/bias"] == pytest.approx(0.5)
    assert scales["head/bias"] == 1.0


def test_hub_like_backbone_groups_embeddings_layers_and_head():
    model = _hub_like(n_layers=3)
    assert _names(detect_blocks(model)) == [
        ["token_embedding", "embeddings_layer_norm"],
        ["transformer_layer_0"],
        ["transformer_layer_1"],
        ["transformer_layer_2"],
        ["final_norm", "head"],
    ]
    rules = layer_decay(model, decay=0.8)
    assert [r.name for r in rules] == [
        "block_0", "transformer_layer_0", "transformer_layer_1", "transformer_layer_2", "block_4",
    ]
    scales, _ = _scales(model, rules)
    for path, scale in scales.items():
        if path.startswith(("token_embedding", "embeddings_layer_norm")):
            assert scale == pytest.approx(0.8**4, rel=1e-6), path
        elif path.startswith("transformer_layer_"):
            i = int(path.split("/")[0].rsplit("_", 1)[1])
            assert scale == pytest.approx(0.8 ** (3 - i), rel=1e-6), path
        else:
            assert path.startswith(("final_norm", "head")) and scale == 1.0, path


def test_frozen_layers_are_left_out():
    model = _hub_like(n_layers=3)
    model.get_layer("backbone").get_layer("transformer_layer_0").trainable = False
    model.get_layer("backbone").get_layer("embeddings_layer_norm").trainable = False
    assert _names(detect_blocks(model)) == [
        ["token_embedding"], ["transformer_layer_1"], ["transformer_layer_2"], ["final_norm", "head"],
    ]
    scales, _ = _scales(model, layer_decay(model, decay=0.5))
    assert scales["token_embedding/embeddings"] == pytest.approx(0.125)
    for layer in model.get_layer("backbone").layers:
        layer.trainable = layer.name == "final_norm"
    assert _names(detect_blocks(model)) == [["final_norm"], ["head"]]


def test_subclassed_model_orders_indexed_blocks_by_index():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.embed = keras.layers.Dense(4, name="embed")
            # Tracked in the wrong order on purpose: the index decides.
            self.blocks = [keras.layers.Dense(4, name=f"layer_{i}") for i in (2, 0, 1)]
            self.head = keras.layers.Dense(2, name="head")

        def call(self, x):
            x = self.embed(x)
            for block in sorted(self.blocks, key=lambda b: b.name):
                x = block(x)
            return self.head(x)

    model = Net()
    model(np.zeros((1, 4), "float32"))
    assert _names(detect_blocks(model)) == [["embed"], ["layer_0"], ["layer_1"], ["layer_2"], ["head"]]


def test_keras_automatic_names_are_not_repeated_blocks():
    # `dense`, `dense_1`, `dense_2` (Keras' names) do not start at `_0`.
    inputs = keras.Input((4,))
    x = inputs
    for _ in range(3):
        x = keras.layers.Dense(4)(x)
        x = keras.layers.LayerNormalization()(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(x))
    assert len(detect_blocks(model)) == 7


# ----------------------------------------------------------------------
# Explicit blocks.


def test_explicit_blocks_win_over_detection():
    model = _sequential()
    layer = model.get_layer
    rules = layer_decay(model, decay=0.5, blocks=[[layer("conv1"), layer("conv2")], ".*dense/.*", layer("head")])
    assert [r.name for r in rules] == ["block_0", "block_1", "head"]
    scales, _ = _scales(model, rules)
    assert scales["seq/conv2/kernel"] == pytest.approx(0.25)
    assert scales["seq/dense/kernel"] == pytest.approx(0.5)
    assert scales["seq/head/kernel"] == 1.0


def test_regex_with_a_capture_group_gives_one_block_per_value():
    model = _hub_like(n_layers=11)
    with pytest.warns(UserWarning, match="below 0.001 of the base rate"):  # 0.5 ** 12
        rules = layer_decay(
            model, decay=0.5,
            blocks=["token_embedding/.*", r"transformer_layer_(\d+)/.*", "head/.*"],
        )
    # Natural order: 2 before 10.
    assert len(rules) == 13
    scales, _ = _scales(model, rules)
    assert scales["transformer_layer_10/ffn/kernel"] == pytest.approx(0.5)
    assert scales["transformer_layer_2/ffn/kernel"] == pytest.approx(0.5**9)
    assert scales["token_embedding/embeddings"] == pytest.approx(0.5**12)


def test_variables_in_no_block_keep_the_inner_learning_rate():
    model = _hub_like(n_layers=2)
    rules = layer_decay(model, decay=0.5, blocks=[r"transformer_layer_(\d+)/.*", "head/.*"])
    _, opt = _scales(model, rules, lr=0.1)
    rows = {r["path"]: r for r in opt.summary_rows()}
    for path in ("token_embedding/embeddings", "final_norm/gamma"):
        assert rows[path]["rules"] == [] and rows[path]["lr_scale"] == 1.0
        assert rows[path]["effective_lr"] == pytest.approx(0.1)
    lines = []
    opt.summary(print_fn=lines.append)
    assert "token_embedding/embeddings" in lines[0]


# ----------------------------------------------------------------------
# discriminative and warm-up.


def test_discriminative_spaces_rates_geometrically_relative_to_the_high_end():
    model = _sequential()
    low, high = 1e-5, 1e-3
    rules = discriminative(model, lr_range=(low, high))
    expected = [low * (high / low) ** (i / 3) for i in range(4)]
    assert [r.lr_scale for r in rules] == pytest.approx([e / high for e in expected])
    # With the inner rate at `high`, each block learns at exactly lr_i.
    _, opt = _scales(model, rules, lr=high)
    rows = {r["path"]: r["effective_lr"] for r in opt.summary_rows()}
    for name, lr in zip(["conv1", "conv2", "dense", "head"], expected):
        assert rows[f"seq/{name}/kernel"] == pytest.approx(lr, rel=1e-6)
    # It is layer_decay with decay = (low / high) ** (1 / (L - 1)).
    same = layer_decay(model, decay=(low / high) ** (1 / 3))
    assert [r.lr_scale for r in same] == pytest.approx([r.lr_scale for r in rules])


def test_discriminative_single_block_and_equal_ends():
    model = _sequential()
    assert [r.lr_scale for r in discriminative(model, (1e-3, 1e-3))] == [1.0] * 4
    only = discriminative(model, (1e-5, 1e-3), blocks=[".*"])
    assert [r.lr_scale for r in only] == [1.0]


def test_warmup_steps_ramp_every_block_but_the_last(jit_compile):
    model = helpers.mlp()
    rules = layer_decay(model, decay=0.5, warmup_steps=3)
    assert [r.lr_scale for r in rules] == [
        LinearWarmup(0.25, warmup_steps=3), LinearWarmup(0.5, warmup_steps=3), 1.0,
    ]
    opt = lw.LayerwiseOptimizer(keras.optimizers.SGD(0.1), rules)
    model.compile(opt, "mse", jit_compile=jit_compile)
    x, y = helpers.data(n=16)
    before = helpers.weights(model)
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    moved = [not np.array_equal(a, b) for a, b in zip(helpers.weights(model), before)]
    assert moved == [False, False, False, False, True, True]  # step 0: body at 0
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    rows = {r["path"]: r["lr_scale"] for r in opt.summary_rows()}
    assert rows["l0/kernel"] == pytest.approx(0.25 * 2 / 3, rel=1e-6)
    assert rows["l1/kernel"] == pytest.approx(0.5 * 2 / 3, rel=1e-6)
    assert rows["l2/kernel"] == 1.0


# ----------------------------------------------------------------------
# Serialization.


def test_rules_round_trip_through_model_save_and_load(tmp_path):
    model = _hub_like(n_layers=2)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 11, size=(32, 5)).astype("int32")
    y = rng.normal(size=(32, 2)).astype("float32")
    rules = layer_decay(model, decay=0.7, warmup_steps=3) + [
        lw.Rule(".*bias|.*gamma|.*beta", weight_decay=0.0, name="no_decay")
    ]
    model.compile(lw.LayerwiseOptimizer(keras.optimizers.AdamW(1e-2, weight_decay=0.1), rules), "mse")
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path, custom_objects={"TransformerLayer": TransformerLayer})
    assert isinstance(loaded.optimizer, lw.LayerwiseOptimizer)
    assert [r.get_config() for r in loaded.optimizer.rules] == [
        r.get_config() for r in model.optimizer.rules
    ]
    assert loaded.optimizer.get_rule("transformer_layer_0").lr_scale == LinearWarmup(0.7**2, 3)
    for a, b in zip(loaded.optimizer.summary_rows(), model.optimizer.summary_rows(), strict=True):
        assert (a["path"], a["rules"], a["weight_decay"]) == (b["path"], b["rules"], b["weight_decay"])
        assert a["lr_scale"] == pytest.approx(b["lr_scale"], rel=1e-6)
    loaded.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    helpers.assert_weights_close(helpers.weights(loaded), helpers.weights(model), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------
# Bad input.


@pytest.mark.parametrize("decay", [0, -0.5, 1.5, float("nan"), True, "0.5"])
def test_bad_decay_raises(decay):
    with pytest.raises(ValueError, match=r"`decay` must be a number in \(0, 1\]. Received: decay="):
        layer_decay(_sequential(), decay=decay)


@pytest.mark.parametrize(
    "lr_range", [(1e-3, 1e-5), (0.0, 1e-3), (-1e-5, 1e-3), (1e-3,), 1e-3, (1e-5, float("inf"))]
)
def test_bad_lr_range_raises(lr_range):
    with pytest.raises(ValueError, match="`lr_range` must be a pair"):
        discriminative(_sequential(), lr_range=lr_range)


@pytest.mark.parametrize(
    "blocks, message",
    [
        ([], "`blocks` must be a non-empty list"),
        ([[], ".*head/.*"], r"`blocks\[0\]` must not be an empty list"),
        ([".*conv1/.*", "encoder/.*"], r"`blocks\[1\]` must select at least one trainable variable"),
        ([r"nothing_(\d+)/.*"], r"`blocks\[0\]` must select at least one"),
        ([".*conv1/.*", ".*conv1/kernel"], "`blocks` must not overlap: variable 'seq/conv1/kernel'"),
        (["("], "`match` must be a valid regular expression"),
    ],
)
def test_bad_blocks_raise(blocks, message):
    with pytest.raises(ValueError, match=message):
        layer_decay(_sequential(), decay=0.5, blocks=blocks)


def test_block_of_another_model_raises():
    other = _sequential()
    with pytest.raises(ValueError, match=r"`blocks\[0\]` must select"):
        layer_decay(_branched(), decay=0.5, blocks=[other.get_layer("head")])


def test_unbuilt_model_raises():
    model = keras.Sequential([keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="`model` must be built"):
        layer_decay(model, decay=0.5)
    with pytest.raises(ValueError, match="`model` must be built"):
        discriminative(model, lr_range=(1e-5, 1e-3))


def test_not_a_model_and_bad_warmup_steps_raise():
    with pytest.raises(TypeError, match="`model` must be a `keras.Model`"):
        layer_decay(keras.layers.Dense(2), decay=0.5)
    with pytest.raises(ValueError, match="`warmup_steps` must be an integer >= 1"):
        layer_decay(_sequential(), decay=0.5, warmup_steps=0)
