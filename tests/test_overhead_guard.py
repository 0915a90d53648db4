"""Regression guard on the cost of rules, by counting, never by timing.

The multiplier must fold into the scalar learning rate each update already
uses: on TensorFlow the traced graph of one `apply` with 13 groups may not
grow beyond the plain optimizer's by more than a few scalar ops per group.
"""

import collections

import keras

import layerwise as lw
from tests.conftest import only_on


def _model():
    inputs = keras.Input((16,))
    x = inputs
    for i in range(12):
        x = keras.layers.Dense(16, name=f"block_{i}")(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="head")(x))


def _graph_ops(optimizer, variables):
    import tensorflow as tf

    grads = [tf.ones(v.shape) for v in variables]
    optimizer.build(variables)
    fn = tf.function(lambda g: optimizer.apply(g, variables))
    graph = fn.get_concrete_function(grads).graph
    return collections.Counter(op.type for op in graph.get_operations())


@only_on("tensorflow")
def test_thirteen_groups_add_only_scalar_ops_to_the_update_graph():
    model = _model()
    variables = model.trainable_variables
    plain = _graph_ops(keras.optimizers.AdamW(1e-3, weight_decay=0.01), variables)
    rules = [lw.Rule(f"block_{i}/.*", lr_scale=0.9 ** (12 - i)) for i in range(12)]
    layerwise = _graph_ops(
        lw.LayerwiseOptimizer(keras.optimizers.AdamW(1e-3, weight_decay=0.01), rules),
        variables,
    )
    groups = 13
    # Per group at most: read the scale, cast, multiply, plus the
    # distribution no-op wrappers of one extra update call.
    assert sum(layerwise.values()) <= sum(plain.values()) + 8 * groups
    # The per-variable update work is unchanged: same number of writes.
    for op in ("AssignSubVariableOp", "AssignAddVariableOp", "AssignVariableOp"):
        assert layerwise[op] == plain[op], op


def test_optimizer_state_is_exactly_slots_of_trainable_variables_plus_scales():
    model = _model()
    rules = [lw.Rule(f"block_{i}/.*", lr_scale=0.5, name=f"b{i}") for i in range(6)]
    rules.append(lw.Rule("block_(6|7|8)/.*", frozen=True, name="frozen"))
    opt = lw.LayerwiseOptimizer(keras.optimizers.Adam(), rules)
    opt.build(model.trainable_variables)
    trainable = [v for v in model.trainable_variables if not v.path.startswith(("block_6", "block_7", "block_8"))]
    slot_elements = 2 * sum(int(keras.ops.size(v)) for v in trainable)
    # Adam: iteration + learning rate; layerwise: one scalar per constant scale.
    expected = slot_elements + 2 + 6
    assert sum(int(keras.ops.size(v)) for v in opt.variables) == expected
