"""Keras model internals the fine-tuning recipes rely on."""


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
