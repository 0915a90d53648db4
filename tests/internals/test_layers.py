"""Fails loudly if a piece of Keras that `layerwise._internals.layers` relies on moves."""

import keras

from layerwise._internals import layers as internals


def _built_dense():
    layer = keras.layers.Dense(2)
    layer.build((None, 3))
    return layer


def test_built_layer_has_a_lockable_tracker():
    layer = _built_dense()
    assert layer._tracker.locked
    with internals.unlocked(layer):
        assert not layer._tracker.locked
    assert layer._tracker.locked


def test_layer_call_reads_the_instance_attribute():
    layer = _built_dense()
    internals.set_instance_override(layer, "call", lambda inputs: "hooked")
    assert layer(keras.ops.ones((1, 3))) == "hooked"
    internals.clear_instance_override(layer, "call")
    assert layer(keras.ops.ones((1, 3))).shape == (1, 2)


def test_dense_reads_its_kernel_from_an_instance_attribute():
    layer = _built_dense()
    assert internals.attributes_holding(layer, layer.kernel) == ["_kernel"]
    assert sorted(internals.own_variables(layer)) == ["bias", "kernel"]


def test_flatten_layers_and_untrack():
    outer = _built_dense()
    inner = keras.layers.Dense(1)
    with internals.unlocked(outer):
        outer.extra = [inner]
    assert inner in internals.flatten_layers(outer)
    internals.untrack(outer, inner)
    assert inner not in internals.flatten_layers(outer)


def test_sublayers_are_the_direct_ones_only():
    inner = keras.layers.Dense(2, name="inner")

    class Block(keras.layers.Layer):
        def __init__(self):
            super().__init__()
            self.wrapped = keras.Sequential([inner])

    block = Block()
    assert internals.sublayers(block) == [block.wrapped]
    assert internals.sublayers(block.wrapped) == [inner]
    assert internals.sublayers(inner) == []
