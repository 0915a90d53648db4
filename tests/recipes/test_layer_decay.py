"""`layer_decay`, `discriminative` and block detection: the formulas on
Sequential, Functional, nested and keras-hub-like models, explicit blocks,
warm-up, unassigned variables, errors, and a save/load round trip."""

import os
import re
import warnings

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


# ----------------------------------------------------------------------
# timm's `min_scale` and `no_opt_scale`, on a ViT-like Functional stack.


class ClassToken(keras.layers.Layer):
    """Prepends a learnt token to the sequence (timm's `cls_token`)."""

    def build(self, input_shape):
        self.token = self.add_weight(shape=(1, 1, input_shape[-1]), initializer="zeros", name="token")

    def call(self, x):
        token = keras.ops.broadcast_to(self.token, (keras.ops.shape(x)[0], 1, x.shape[-1]))
        return keras.ops.concatenate([token, x], axis=1)


class PositionEmbedding(keras.layers.Layer):
    """Adds a learnt embedding per position (timm's `pos_embed`)."""

    def build(self, input_shape):
        self.embedding = self.add_weight(shape=input_shape[1:], initializer="zeros", name="embedding")

    def call(self, x):
        return x + self.embedding


def _vit_like(depth=4, width=8):
    """timm's ViT layout, its names with `_` for `.`: patch_embed, cls_token,
    pos_embed, pre-norm blocks_<i> (attention stood in by a Dense), norm,
    class-token pooling, head."""
    patches = keras.Input((4, 6))
    x = keras.layers.Dense(width, name="patch_embed")(patches)
    x = ClassToken(name="cls_token")(x)
    x = PositionEmbedding(name="pos_embed")(x)
    for i in range(depth):
        h = keras.layers.LayerNormalization(name=f"blocks_{i}_norm1")(x)
        x = keras.layers.Add()([x, keras.layers.Dense(width, name=f"blocks_{i}_attn")(h)])
        h = keras.layers.LayerNormalization(name=f"blocks_{i}_norm2")(x)
        h = keras.layers.Dense(2 * width, activation="gelu", name=f"blocks_{i}_mlp_fc1")(h)
        x = keras.layers.Add()([x, keras.layers.Dense(width, name=f"blocks_{i}_mlp_fc2")(h)])
    x = keras.layers.LayerNormalization(name="norm")(x)
    return keras.Model(patches, keras.layers.Dense(3, name="head")(x[:, 0]), name="vit")


# timm's `param_groups_layer_decay(vit, layer_decay=0.5, min_scale=0.05,
# no_opt_scale=0.1)` for depth 4. ViT's `group_matcher` numbers the groups
# cls_token|pos_embed|patch_embed -> 0, blocks.<i> -> i + 1, norm -> 4 (it
# joins the last block: MATCH_PREV_GROUP), anything else (head) -> 5 = the
# last; scale = max(min_scale, 0.5 ** (5 - id)); a parameter with
# scale < no_opt_scale gets `requires_grad = False` and no group (here:
# frozen, and `summary()` shows no multiplier).
_TIMM_SCALES = [0.05, 0.0625, 0.125, 0.25, 0.5, 1.0]  # 0.05 = max(0.05, 0.5 ** 5)
_TIMM_TABLE = {
    "patch_embed": (None, True),
    "cls_token": (None, True),
    "pos_embed": (None, True),
    "blocks_0": (None, True),  # 0.0625 < 0.1
    "blocks_1": (0.125, False),
    "blocks_2": (0.25, False),
    "blocks_3": (0.5, False),
    "norm": (0.5, False),
    "head": (1.0, False),
}


def test_vit_like_stack_reproduces_timm_param_groups_layer_decay():
    model = _vit_like(depth=4)
    assert [len(block) for block in detect_blocks(model)] == [3, 5, 5, 5, 6, 1]
    rules = layer_decay(model, decay=0.5, min_scale=0.05, no_opt_scale=0.1)
    assert [r.lr_scale for r in rules] == pytest.approx(_TIMM_SCALES)
    assert [bool(r.frozen) for r in rules] == [True, True, False, False, False, False]
    opt = lw.LayerwiseOptimizer(keras.optimizers.SGD(1.0), rules)
    variables = model.trainable_variables  # before the frozen ones turn non-trainable
    opt.build(variables)
    rows = opt.summary_rows()
    assert len(rows) == len(variables) == 2 + 1 + 1 + 4 * 10 + 2 + 2
    for row in rows:
        group = re.match(r"blocks_\d+|[a-z_]+?(?=/)", row["path"]).group(0)
        scale, frozen = _TIMM_TABLE[group]
        assert row["frozen"] is frozen, row["path"]
        assert row["lr_scale"] == (None if frozen else pytest.approx(scale, rel=1e-6)), row["path"]


def test_min_scale_floors_and_no_opt_scale_compares_the_floored_scale():
    model = helpers.mlp()
    rules = layer_decay(model, decay=0.1, min_scale=0.02)
    assert [r.lr_scale for r in rules] == pytest.approx([0.02, 0.1, 1.0])
    assert [r.frozen for r in rules] == [None, None, None]
    # timm: `if no_opt_scale and this_scale < no_opt_scale`, after the floor.
    frozen = layer_decay(model, decay=0.1, min_scale=0.02, no_opt_scale=0.02)
    assert [r.frozen for r in frozen] == [None, None, None]
    frozen = layer_decay(model, decay=0.1, min_scale=0.02, no_opt_scale=0.1)
    assert [r.frozen for r in frozen] == [True, None, None]
    assert [r.frozen for r in layer_decay(model, decay=0.1, no_opt_scale=0)] == [None] * 3


def test_no_opt_scale_blocks_do_not_move_and_have_no_warmup(jit_compile):
    model = helpers.mlp()
    rules = layer_decay(model, decay=0.5, no_opt_scale=0.3, warmup_steps=2)
    assert rules[0].frozen and rules[0].lr_scale == 0.25
    assert rules[1].lr_scale == LinearWarmup(0.5, 2)
    model.compile(lw.LayerwiseOptimizer(keras.optimizers.SGD(0.1), rules), "mse",
                  jit_compile=jit_compile)
    x, y = helpers.data(n=16)
    before = helpers.weights(model)
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    moved = [not np.array_equal(a, b) for a, b in zip(helpers.weights(model), before)]
    assert moved == [False, False, True, True, True, True]


def test_no_opt_scale_rules_round_trip_through_model_save_and_load(tmp_path):
    model = _vit_like(depth=2)
    rules = layer_decay(model, decay=0.5, no_opt_scale=0.3)  # 0.125, 0.25 frozen
    model.compile(lw.LayerwiseOptimizer(keras.optimizers.AdamW(1e-3), rules), "mse")
    model.optimizer.build(model.trainable_variables)
    path = os.path.join(tmp_path, "vit.keras")
    model.save(path)
    loaded = keras.models.load_model(
        path, custom_objects={"ClassToken": ClassToken, "PositionEmbedding": PositionEmbedding})
    assert [r.get_config() for r in loaded.optimizer.rules] == [r.get_config() for r in rules]
    frozen = lambda opt: {r["path"]: r["frozen"] for r in opt.summary_rows()}  # noqa: E731
    assert frozen(loaded.optimizer) == frozen(model.optimizer)
    assert frozen(loaded.optimizer)["blocks_0_attn/kernel"] and not frozen(loaded.optimizer)["head/bias"]


def test_discriminative_uses_the_same_residual_blocks():
    model = _vit_like(depth=2)
    rules = discriminative(model, lr_range=(1e-4, 1e-2))
    assert len(rules) == len(detect_blocks(model)) == 4
    assert [r.lr_scale for r in rules] == pytest.approx([0.01, 0.01 ** (2 / 3), 0.01 ** (1 / 3), 1.0])


# ----------------------------------------------------------------------
# The warning below 1e-3 of the base rate.


def test_scales_below_a_thousandth_warn_with_the_blocks_and_the_smallest():
    with pytest.warns(UserWarning) as record:
        layer_decay(helpers.mlp(), decay=0.01)
    assert len(record) == 1
    message = str(record[0].message)
    assert "1 of 3 blocks" in message and ": l0;" in message
    assert "smallest multiplier is 0.0001 ('l0')" in message
    assert "`min_scale=`" in message and "fewer, coarser `blocks=`" in message


def test_no_warning_for_ordinary_floored_or_frozen_scales():
    model = helpers.mlp()
    for kwargs in ({"decay": 0.75}, {"decay": 0.01, "min_scale": 1e-3},
                   {"decay": 0.01, "no_opt_scale": 1e-3}):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            layer_decay(model, **kwargs)


def test_bad_min_scale_and_no_opt_scale_raise():
    model = helpers.mlp()
    for arg in ("min_scale", "no_opt_scale"):
        for value in (-0.1, 1.5, True, "0.1"):
            with pytest.raises(ValueError, match=rf"`{arg}` must be a number in \[0, 1\]. Received: {arg}="):
                layer_decay(model, decay=0.5, **{arg: value})
