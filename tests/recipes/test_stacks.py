"""`stacks.tower` on small Keras models shaped like keras-hub's: a stack
nested in a layer without a graph, towers of unequal depth aligned at their
tops, a shared block that warns, Keras' automatic names that are no stack.
(`test_hub_blocks.py` checks keras-hub itself.)"""

import warnings

import keras
import pytest

import layerwise as lw
from layerwise.recipes.stacks import tower


class _Block(keras.layers.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(4, name="dense")

    def call(self, x):
        return x + self.dense(x)


class _Encoder(keras.layers.Layer):
    """Blocks named from 1 and a final norm created first, as in keras-hub's
    ViT and PaliGemma encoders (layers without a graph)."""

    def __init__(self, depth, **kwargs):
        super().__init__(**kwargs)
        self.norm = keras.layers.LayerNormalization(name="norm")
        self.blocks = [_Block(name=f"block_{i + 1}") for i in range(depth)]

    def call(self, x):
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


def _names(blocks):
    return [sorted(layer.name for layer in block) for block in blocks]


def test_stack_nested_in_a_layer_is_expanded_with_its_norm_on_top():
    inputs = keras.Input((4,))
    x = keras.layers.Dense(4, name="embed")(inputs)
    x = _Encoder(3, name="encoder")(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(x))
    assert _names(lw.detect_blocks(model)) == [
        ["embed"], ["block_1"], ["block_2"], ["block_3"], ["head", "norm"]]


def test_towers_of_unequal_depth_are_aligned_at_their_tops():
    a, b = keras.Input((4,)), keras.Input((4,))
    deep = _Encoder(3, name="deep")(keras.layers.Dense(4, name="embed_a")(a))
    shallow = _Encoder(2, name="shallow")(keras.layers.Dense(4, name="embed_b")(b))
    merged = keras.layers.Concatenate()([deep, shallow])
    model = keras.Model([a, b], keras.layers.Dense(2, name="head")(merged))
    blocks = lw.detect_blocks(model)
    # deep: embed_a, 3 blocks, norm; shallow: embed_b, 2 blocks, norm.
    assert _names(blocks) == [
        ["embed_a"], ["block_1", "embed_b"], ["block_1", "block_2"], ["block_2", "block_3"],
        ["head", "norm", "norm"]]
    scales = [rule.lr_scale for rule in lw.layer_decay(model, 0.5)]
    assert scales == [0.0625, 0.125, 0.25, 0.5, 1.0]


def test_a_shared_block_warns_naming_it_and_is_one_block():
    shared = _Block(name="shared_block")
    inputs = keras.Input((4,))
    x = keras.layers.Dense(4, name="embed")(inputs)
    x = shared(shared(x))
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(x))
    with pytest.warns(UserWarning, match=r"'shared_block' \(2 calls\)"):
        blocks = lw.detect_blocks(model)
    assert _names(blocks) == [["embed"], ["shared_block"], ["head"]]


def test_keras_automatic_names_and_single_layers_are_no_stack():
    inputs = keras.Input((4,))
    x = inputs
    for _ in range(3):  # `block`, `block_1`, `block_2`: Keras' own names
        x = _Block()(x)
    for i in range(2):  # indexed, but single `Dense` layers, not blocks
        x = keras.layers.Dense(4, name=f"dense_{i}")(x)
    model = keras.Model(inputs, x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert tower(model) is None
