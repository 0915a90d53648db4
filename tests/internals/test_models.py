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


def test_functional_graph_lists_calls_with_their_parents_inputs_first():
    model = _branched()
    graph = internal_models.functional_graph(model)
    names = [node.operation.name for node in graph]
    position = {name: i for i, name in enumerate(names)}
    assert names[0] == model.layers[0].name and graph[0].is_input
    assert sorted(names[i] for i in graph[position["add"]].parents) == ["a", "b"]
    assert [names[i] for i in graph[position["head"]].parents] == ["add"]
    assert [node.is_output for node in graph] == [name == "head" for name in names]
    assert all(p < i for i, node in enumerate(graph) for p in node.parents)


def test_functional_graph_includes_ops_and_is_none_for_sequential():
    inputs = keras.Input((4,))
    x = keras.layers.Dense(4, name="a")(inputs)
    gated = x * keras.ops.sigmoid(x)
    model = keras.Model(inputs, keras.layers.Multiply(name="mul")([gated, x]))
    graph = internal_models.functional_graph(model)
    products = [node.operation.name for node in graph if internal_models.is_product(node.operation)]
    assert len(products) == 2 and "mul" in products
    assert not internal_models.is_product(model.get_layer("a"))
    assert internal_models.functional_graph(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])) is None


def test_graph_outputs_and_producer_read_keras_graph():
    model = _branched()
    (output,) = internal_models.graph_outputs(model)
    head, inputs = internal_models.producer(output)
    assert head.name == "head"
    add, branches = internal_models.producer(inputs[0])
    assert isinstance(add, keras.layers.Add)
    assert sorted(internal_models.producer(t)[0].name for t in branches) == ["a", "b"]
    source, none = internal_models.producer(internal_models.producer(branches[0])[1][0])
    assert isinstance(source, keras.layers.InputLayer) and none == []


def test_graph_outputs_of_sequential_and_subclassed_models():
    sequential = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="d")])
    (output,) = internal_models.graph_outputs(sequential)
    assert internal_models.producer(output)[0].name == "d"
    assert internal_models.graph_outputs(keras.Sequential([keras.layers.Dense(2)])) is None

    class Sub(keras.Model):
        def call(self, x):
            return x

    assert internal_models.graph_outputs(Sub()) is None
