"""Regression guard on the cost of rules, by counting, never by timing.

The multiplier must fold into the scalar learning rate each update already
uses: on TensorFlow the traced graph of one `apply` with 13 groups may not
grow beyond the plain optimizer's by more than a few scalar ops per group.
"""

import collections

import keras
import numpy as np

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


def test_state_with_accumulation_and_ema_is_exact():
    """Slots, one accumulator and one average per non-frozen variable, the
    counters and the scales: nothing else."""
    model = _model()
    rules = [lw.Rule(f"block_{i}/.*", lr_scale=0.5, name=f"b{i}") for i in range(6)]
    rules.append(lw.Rule("block_(6|7|8)/.*", frozen=True, name="frozen"))
    frozen = ("block_6", "block_7", "block_8")
    trainable = [v for v in model.trainable_variables if not v.path.startswith(frozen)]
    opt = lw.LayerwiseOptimizer(keras.optimizers.Adam(), rules, accumulate_steps=4, ema=0.99)
    opt.build(model.trainable_variables)
    elements = sum(int(keras.ops.size(v)) for v in trainable)
    # Adam m and v, accumulator, average; iteration, learning rate, micro
    # step; one scalar per constant scale.
    expected = 4 * elements + 3 + 6
    assert sum(int(keras.ops.size(v)) for v in opt.variables) == expected


def test_each_change_of_freezing_costs_one_retrace(jit_compile):
    """GradualUnfreezing over 3 epochs: the schedule freezes two blocks at
    epoch 0 (before the first trace) and unfreezes one at each of epochs 1
    and 2: one (re)trace per change when compiled, none between changes."""
    traces = []

    def hook(grads, variables):
        traces.append(len(variables))  # once per trace when compiled
        return grads

    inputs = keras.Input((6,))
    x = keras.layers.Dense(5, name="l0")(inputs)
    x = keras.layers.Dense(4, name="l1")(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="l2")(x))
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.Adam(0.01), lw.layer_decay(model, decay=0.5), gradient_hook=hook
    )
    model.compile(opt, "mse", jit_compile=jit_compile)
    x = np.ones((32, 6), "float32")
    y = np.ones((32, 2), "float32")
    model.fit(x, y, batch_size=8, epochs=3, verbose=0,
              callbacks=[lw.callbacks.GradualUnfreezing({0: "l2", 1: "l1", 2: "l0"})])
    if jit_compile or keras.backend.backend() == "tensorflow":
        # Each trace sees the variables trainable at that time: 2 (l2), then
        # 4 (l1 unfrozen), then 6. Keras may trace one step function twice,
        # and on JAX `build`/`set_frozen` run the hook once symbolically; what
        # must not happen is a retrace between changes (more of the same).
        sizes = [n for i, n in enumerate(traces) if i == 0 or traces[i - 1] != n]
        assert sizes[-3:] == [2, 4, 6]
        assert traces.count(4) == traces.count(6) <= 3


def _buffer_copies(compiled_text):
    """Copies of non-scalar buffers in an optimized HLO module's entry."""
    entry = compiled_text.split("\nENTRY ", 1)[1]
    return sum(1 for line in entry.splitlines() if " copy(" in line and "[]" not in line.split("=")[1].split(" copy(")[0])


@only_on("jax")
def test_thirteen_groups_compile_to_no_buffer_copies_on_jax():
    """Layer-wise rates must not make XLA copy weights or slots: the jitted
    apply (state donated in the order it is returned, as Keras' JAX trainer
    does) and the whole train step compile to as many buffer copies as with
    the plain optimizer (none in the apply). A `(opt, train) -> (train,
    opt)` apply pairs the donations wrongly and copies every buffer; that is
    what `benchmarks/jax_groups.py` shows."""
    import jax

    def compiled_apply(optimizer, variables):
        optimizer.build(variables)
        grads = [keras.ops.ones(v.shape) for v in variables]

        def step(train, opt, grads):
            return optimizer.stateless_apply(opt, grads, train)

        text = jax.jit(step, donate_argnums=(0, 1)).lower(
            [v.value for v in variables], [v.value for v in optimizer.variables], grads
        ).compile().as_text()
        return _buffer_copies(text)

    def compiled_train_step(optimizer):
        model = _model()
        model.compile(optimizer, "mse")
        model.optimizer.build(model.trainable_variables)
        state = (
            [v.value for v in model.trainable_variables],
            [v.value for v in model.non_trainable_variables],
            [v.value for v in model.optimizer.variables],
            [v.value for v in model.metrics_variables],
        )
        data = (np.ones((8, 16), "float32"), np.ones((8, 4), "float32"))
        text = jax.jit(model.train_step, donate_argnums=0).lower(state, data).compile().as_text()
        return _buffer_copies(text)

    def rules():
        return [lw.Rule(f"block_{i}/.*", lr_scale=0.9 ** (12 - i)) for i in range(12)]

    def adamw():
        return keras.optimizers.AdamW(1e-3, weight_decay=0.01)

    variables = _model().trainable_variables
    assert compiled_apply(adamw(), variables) == 0
    assert compiled_apply(lw.LayerwiseOptimizer(adamw(), rules()), _model().trainable_variables) == 0
    assert compiled_train_step(lw.LayerwiseOptimizer(adamw(), rules())) == compiled_train_step(adamw())


def _compiled_train_step(model, phase=None):
    """The optimized HLO of one compiled train step of `model` (TensorFlow
    with XLA, or JAX), traced as accumulation phase `phase` if given."""
    import contextlib

    data = (np.ones((8, 16), "float32"), np.ones((8, 4), "float32"))
    model.optimizer.build(model.trainable_variables)
    traced_as = model.optimizer.accumulation.traced_as(phase) if phase else contextlib.nullcontext()
    with traced_as:
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            step = tf.function(model.train_step, jit_compile=True)
            return step.experimental_get_compiler_ir(data)(stage="optimized_hlo")
        import jax

        state = (
            [v.value for v in model.trainable_variables],
            [v.value for v in model.non_trainable_variables],
            [v.value for v in model.optimizer.variables],
            [v.value for v in model.metrics_variables],
        )
        return jax.jit(model.train_step, donate_argnums=0).lower(state, data).compile().as_text()


def _counts(hlo):
    entry = hlo.split("\nENTRY ", 1)[1].splitlines()
    return {
        "fusions": sum(" fusion(" in line for line in entry),
        "copies": sum(" copy(" in line for line in entry),
        "conditionals": hlo.count(" conditional("),
    }


@only_on("tensorflow", "jax")
def test_split_micro_step_compiles_to_the_work_of_plain_sgd():
    """A micro-step traced as SplitAccumulation traces it does what plain
    SGD's step does (forward, backward, one pass over the gradients): as
    many fused kernels and no conditional. Copies: on JAX an unchanged
    weight that the step returns is copied (as in any Keras JAX step that
    leaves a variable alone), so at most one more per weight, never one per
    slot or accumulator. The conditional step of the same optimizer
    compiles to a conditional or to copies of the state it carries (what
    the callback removes)."""

    def compiled(optimizer, phase=None):
        model = _model()
        model.compile(optimizer, "mse")
        return _counts(_compiled_train_step(model, phase))

    def accumulating():
        rules = [lw.Rule(f"block_{i}/.*", lr_scale=0.9 ** (12 - i)) for i in range(12)]
        return lw.LayerwiseOptimizer(
            keras.optimizers.AdamW(1e-3, weight_decay=0.01), rules, accumulate_steps=4
        )

    sgd = compiled(keras.optimizers.SGD(1e-3))
    micro = compiled(accumulating(), "micro")
    conditional = compiled(accumulating())
    weights = len(_model().trainable_variables)
    assert micro["conditionals"] == 0
    assert micro["fusions"] <= sgd["fusions"] + 2
    assert micro["copies"] <= sgd["copies"] + weights
    assert (conditional["conditionals"] + conditional["copies"]
            > micro["conditionals"] + micro["copies"])


def _ops_with(extra_rule):
    model = _model()
    rules = [lw.Rule(f"block_{i}/.*", lr_scale=0.9 ** (12 - i)) for i in range(12)]
    optimizer = lw.LayerwiseOptimizer(
        keras.optimizers.AdamW(1e-3, weight_decay=0.01), rules + [extra_rule]
    )
    return _graph_ops(optimizer, model.trainable_variables), optimizer


@only_on("tensorflow")
def test_update_transforms_and_projections_cost_only_their_variables():
    """A rule without update transforms or projections adds nothing to the
    graph; one with them adds ops for its own variables only (block_0:
    kernel and bias), and no state."""
    model = _model()
    rules = [lw.Rule(f"block_{i}/.*", lr_scale=0.9 ** (12 - i)) for i in range(12)]
    without = _graph_ops(
        lw.LayerwiseOptimizer(keras.optimizers.AdamW(1e-3, weight_decay=0.01), rules),
        model.trainable_variables,
    )
    plain, plain_opt = _ops_with(lw.Rule("block_0/.*"))
    assert plain == without
    transformed, transformed_opt = _ops_with(
        lw.Rule("block_0/.*", update=[lw.clip_update(1.0)], project=[lw.max_norm(2.0)])
    )
    # One landing of the transformed update and one projected write each.
    assert transformed["AssignVariableOp"] == plain["AssignVariableOp"] + 2 * 2
    for op in ("AssignSubVariableOp", "AssignAddVariableOp"):
        assert transformed[op] == plain[op], op
    # A copy, a subtraction, the clip and the projection per variable: a
    # bounded number of ops for each of the two, none for the other 24.
    assert sum(transformed.values()) - sum(plain.values()) <= 2 * 40
    assert len(transformed_opt.variables) == len(plain_opt.variables)
