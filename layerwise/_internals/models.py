"""Keras model internals the fine-tuning recipes rely on."""

import keras


def functional_depths(model):
    """Keras' own topological depth of a Functional model's layers.

    Returns a dict `id(layer) -> depth` (depth 0 holds the output layers), or
    `None` if `model` is not a Functional model. `_operations_by_depth` is
    private: Keras' `map_graph` sets it. `tests/internals/test_models.py`
    fails loudly if it moves.
    """
    from keras.src.models.functional import Functional

    if not isinstance(model, Functional):
        return None
    depths = {}
    for depth, operations in model._operations_by_depth.items():
        for operation in operations:
            depths[id(operation)] = depth
    return depths


def graph_outputs(model):
    """The symbolic output tensors of a Functional or built `Sequential`
    model (a flat list), or `None` for a subclassed model, which has no
    graph to read."""
    from keras.src.models.functional import Functional

    if isinstance(model, keras.Sequential):
        if not model.built:
            return None
        return keras.tree.flatten(model.outputs)
    if not isinstance(model, Functional):
        return None
    return keras.tree.flatten(model.outputs)


def producer(tensor):
    """The operation that produced a symbolic tensor of a model's graph and
    the input tensors of that call (none for a model input).

    `_keras_history` and `_inbound_nodes` are private: Keras' `Node` sets
    them when an operation is called on symbolic tensors.
    """
    operation, node_index, _ = tensor._keras_history
    node = operation._inbound_nodes[node_index]
    return operation, keras.tree.flatten(node.input_tensors)
