"""Keras model internals the fine-tuning recipes rely on.

Everything here reads a Functional model's graph, which Keras keeps in
private attributes that `map_graph` sets. `tests/internals/test_models.py`
fails loudly if they move.
"""

import dataclasses

import keras


def _functional_class():
    from keras.src.models.functional import Functional

    return Functional


def functional_depths(model):
    """Keras' own topological depth of a Functional model's layers.

    Returns a dict `id(layer) -> depth` (depth 0 holds the output layers), or
    `None` if `model` is not a Functional model. `_operations_by_depth` is
    private: Keras' `map_graph` sets it.
    """
    if not isinstance(model, _functional_class()):
        return None
    depths = {}
    for depth, operations in model._operations_by_depth.items():
        for operation in operations:
            depths[id(operation)] = depth
    return depths


@dataclasses.dataclass(frozen=True)
class GraphNode:
    """One call of an operation in a Functional model's graph.

    Attributes:
        operation: The layer or operation called (`keras.ops` calls on
            symbolic tensors, such as `x + y`, are operations, not layers).
        parents: Positions, in the graph's node list, of the nodes whose
            outputs this call consumes (a tensor used twice appears twice).
        is_input: Whether this node is a model input.
        is_output: Whether this node produces a model output.
    """

    operation: object
    parents: tuple
    is_input: bool
    is_output: bool


def functional_graph(model):
    """A Functional model's calls, in topological order (inputs first).

    Returns a list of `GraphNode`, or `None` if `model` is not a Functional
    model. A layer called twice has two nodes. Reads `_nodes_by_depth`
    (depth counted from the outputs, so a node's parents are deeper) and
    `Node.parent_nodes`.
    """
    if not isinstance(model, _functional_class()):
        return None
    ordered = []
    for depth in sorted(model._nodes_by_depth, reverse=True):
        ordered.extend(model._nodes_by_depth[depth])
    position = {id(node): i for i, node in enumerate(ordered)}
    outputs = {
        id(tensor._keras_history.operation._inbound_nodes[tensor._keras_history.node_index])
        for tensor in model.outputs
    }
    graph = []
    for node in ordered:
        parents = tuple(
            position[id(parent)] for parent in node.parent_nodes if id(parent) in position
        )
        graph.append(
            GraphNode(node.operation, parents, bool(node.is_input), id(node) in outputs)
        )
    return graph


def is_product(operation):
    """Whether `operation` multiplies its inputs elementwise: a
    `keras.layers.Multiply` layer or a `keras.ops.multiply` call (`x * y`)."""
    from keras.src.ops.numpy import Multiply

    return isinstance(operation, (keras.layers.Multiply, Multiply))


def graph_outputs(model):
    """The symbolic output tensors of a Functional or built `Sequential`
    model (a flat list), or `None` for a subclassed model, which has no
    graph to read."""
    if isinstance(model, keras.Sequential):
        if not model.built:
            return None
        return keras.tree.flatten(model.outputs)
    if not isinstance(model, _functional_class()):
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
