"""The update stages on their own (learning rates, weight decay, the
grouped update): one update call per group, per-step state advanced once
per step, step counts, decay resolved at build."""

import keras
import numpy as np
import pytest

from layerwise._internals import optimizers as internals
from layerwise.optim import plan as plan_lib
from layerwise.optim import rules as rules_lib
from layerwise.optim import pipeline as pipeline_lib
from layerwise.optim import stage as stage_lib
from layerwise.optim import updaters as updaters_lib
from layerwise.optim.stages import grouped_update
from layerwise.optim.stages import learning_rates
from layerwise.optim.stages import weight_decay


def _setup(optimizers, rules, variables, optimizer_of_rule):
    bound = [rule.bind(f"r{i}", None) for i, rule in enumerate(rules)]
    plan = plan_lib.make_plan(bound, variables, optimizer_of_rule)
    updates = updaters_lib.Updaters(optimizers)
    updates.build(plan_lib.slot_holders(plan, len(optimizers)))
    return bound, plan, updates


def _update(plan, bound, updates, positions, grads, variables):
    """The three update stages as the pipeline runs them."""
    pipeline = pipeline_lib.Pipeline([
        learning_rates.LearningRates(bound, updates),
        weight_decay.WeightDecay(updates),
        grouped_update.GroupedUpdate(updates),
    ])
    record = stage_lib.StepRecord(
        plan=plan, grads=list(grads), variables=list(variables),
        step=internals.iterations_variable(updates.optimizers[0]),
        optimizer_variables=lambda: [], positions=list(positions),
    )
    with internals.update_context():  # as the facade runs it (torch: no autograd)
        pipeline.run(record)


def test_nadam_step_state_advances_once_for_several_groups():
    """Two groups of one Nadam: `_u_product` advances once per step, so the
    result equals one Nadam over both variables."""
    a = keras.Variable(np.ones(2, "float32"), name="a")
    b = keras.Variable(np.ones(2, "float32"), name="b")
    rules = [rules_lib.Rule(a, lr_scale=1.0)]  # a second group, same rate
    bound, plan, updates = _setup([keras.optimizers.Nadam(0.1)], rules, [a, b], [None])
    assert len(plan.groups) == 2
    ref = [keras.Variable(np.ones(2, "float32")) for _ in range(2)]
    plain = keras.optimizers.Nadam(0.1)
    g = [keras.ops.convert_to_tensor([0.5, -1.0]), keras.ops.convert_to_tensor([2.0, 0.1])]
    for _ in range(3):
        _update(plan, bound, updates, [0, 1], g, [a, b])
        updates.optimizers[0].iterations.assign_add(1)  # the facade counts the inner one
        plain.apply(g, ref)
    for v, r in zip([a, b], ref):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(v), keras.ops.convert_to_numpy(r), rtol=1e-6)


def test_rule_optimizers_count_their_own_steps_and_the_inner_one_is_left_to_the_caller():
    a = keras.Variable(np.ones(2, "float32"), name="a")
    b = keras.Variable(np.ones(2, "float32"), name="b")
    sgd = keras.optimizers.SGD(0.1)
    rules = [rules_lib.Rule(b, optimizer=sgd)]
    bound, plan, updates = _setup([keras.optimizers.SGD(0.1), sgd], rules, [a, b], [1])
    _update(plan, bound, updates, [0, 1], [keras.ops.ones(2)] * 2, [a, b])
    assert [int(o.iterations) for o in updates.updaters] == [0, 1]


def _decay_setup():
    """AdamW (decay 0.1) over a, b, c with `b` excluded from decay; `a` at
    lr_scale 0.5, `c` overridden to decay 0.3: three groups."""
    a, b, c = (keras.Variable(np.full(2, 1.0 + i, "float32"), name=n) for i, n in enumerate("abc"))
    inner = keras.optimizers.AdamW(0.1, weight_decay=0.1)
    inner.exclude_from_weight_decay(var_list=[b])
    rules = [rules_lib.Rule(a, lr_scale=0.5), rules_lib.Rule(c, weight_decay=0.3)]
    bound = [rule.bind(f"r{i}", None) for i, rule in enumerate(rules)]
    updates = updaters_lib.Updaters([inner])
    plan = plan_lib.make_plan(bound, [a, b, c], [None, None], decay_of=updates.decay_of)
    updates.build(plan_lib.slot_holders(plan, 1))
    return bound, plan, updates, [a, b, c]


def test_decay_coefficients_are_resolved_in_the_plan():
    _, plan, _, _ = _decay_setup()
    assert [p.decay for p in plan.trainable] == [pytest.approx(0.1), None, pytest.approx(0.3)]
    assert [g.decays for g in plan.groups] == [((pytest.approx(0.1), (0,)),), (), ((0.3, (2,)),)]


def test_a_step_makes_one_update_call_per_group_and_no_decay_lookup(monkeypatch):
    """The counting guard of the step's per-group work: one update call and
    at most one decay call per group, and no per-variable decay lookup
    (resolved at build), whatever the number of variables."""
    bound, plan, updates, variables = _decay_setup()
    calls = {"update": 0, "decay": 0, "lookup": 0}

    def counting(name, fn):
        def wrapped(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(internals, "backend_update_step", counting("update", internals.backend_update_step))
    monkeypatch.setattr(internals, "decay_weights", counting("decay", internals.decay_weights))
    monkeypatch.setattr(internals, "decay_coefficient", counting("lookup", internals.decay_coefficient))
    monkeypatch.setattr(internals, "apply_weight_decay", counting("lookup", internals.apply_weight_decay))
    grads = [keras.ops.convert_to_tensor([0.5, -1.0])] * 3
    _update(plan, bound, updates, [0, 1, 2], grads, variables)
    assert calls == {"update": 3, "decay": 2, "lookup": 0}


def test_resolved_decay_matches_adamw_per_group():
    """Each variable ends where a plain AdamW at its group's rate and decay
    takes it (b: no decay, as excluded; c: the rule's 0.3)."""
    bound, plan, updates, variables = _decay_setup()
    references = [
        keras.optimizers.AdamW(0.05, weight_decay=0.1),
        keras.optimizers.AdamW(0.1, weight_decay=0.0),
        keras.optimizers.AdamW(0.1, weight_decay=0.3),
    ]
    copies = [keras.Variable(keras.ops.convert_to_numpy(v)) for v in variables]
    grads = [keras.ops.convert_to_tensor([0.5, -1.0])] * 3
    for _ in range(2):
        _update(plan, bound, updates, [0, 1, 2], grads, variables)
        updates.optimizers[0].iterations.assign_add(1)
        for reference, copy, g in zip(references, copies, grads):
            reference.apply([g], [copy])
    for v, r in zip(variables, copies):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(v), keras.ops.convert_to_numpy(r), rtol=1e-6)



def _adamw_run(wrap, change_at=2):
    import layerwise as lw

    rng = np.random.default_rng(0)
    init = [rng.normal(size=(3, 2)).astype("float32"), rng.normal(size=(2,)).astype("float32")]
    grads = [keras.ops.convert_to_tensor(rng.normal(size=w.shape).astype("float32")) for w in init]
    variables = [keras.Variable(w, name=f"v{i}") for i, w in enumerate(init)]
    optimizer = keras.optimizers.AdamW(0.1, weight_decay=0.0)
    if wrap:
        # A second group, so the kernel's decay comes from a resolved plan.
        optimizer = lw.LayerwiseOptimizer(optimizer, [lw.Rule(".*v1", lr_scale=0.5)])
    for step in range(4):
        if step == change_at:
            optimizer.weight_decay = 0.5
        optimizer.apply(grads, variables)
    return np.asarray(variables[0])


def test_weight_decay_changed_during_training_takes_effect_as_in_keras():
    # Keras reads `weight_decay` at every (eager) step; the plan resolved
    # the coefficients at build and must be made again.
    plain = _adamw_run(wrap=False)
    np.testing.assert_allclose(_adamw_run(wrap=True), plain, rtol=1e-6, atol=1e-7)
    assert np.max(np.abs(_adamw_run(wrap=False, change_at=None) - plain)) > 1e-3
