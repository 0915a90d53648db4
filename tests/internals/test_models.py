"""Fails loudly if the Keras model internals the recipes use move."""

import keras

from layerwise._internals import models as internal_models


def _branched():
    inputs = keras.Input((4,))
    a = keras.layers.Dense(3, name="a")(inputs)
    b = keras.layers.Dense(3, name="b")(inputs)
    x = keras.layers.Add()([a, b])
    return keras.Model(inputs, keras.layers.Dense(2, name="head")(x))


def test_functional_depths_come_from_keras_graph():
    model = _branched()
    depths = internal_models.functional_depths(model)
    assert depths is not None
    by_name = {layer.name: depths[id(layer)] for layer in model.layers if id(layer) in depths}
    assert by_name["head"] < by_name["a"] == by_name["b"]


def test_functional_depths_is_none_for_sequential():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    assert internal_models.functional_depths(model) is None
