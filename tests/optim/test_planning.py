"""The plan's lifecycle on its own: made from the rules as they are, made
again for new decay, slot holders for unfrozen variables, and what a saved
optimizer records."""

import keras
import numpy as np
import pytest

from layerwise.optim import plan as plan_lib
from layerwise.optim import planning
from layerwise.optim import rules as rules_lib
from layerwise.optim import updaters as updaters_lib


def _variables():
    a = keras.Variable(np.ones((2, 2), "float32"), name="a")
    b = keras.Variable(np.ones(2, "float32"), name="b")
    return a, b


def _planning(rules, optimizers, strict=True):
    bound = [rule.bind(f"r{i}", None) for i, rule in enumerate(rules)]
    updates = updaters_lib.Updaters(optimizers)
    return bound, updates, planning.Planning(bound, [None] * len(bound), strict, updates, id)


def test_make_reads_the_rules_as_they_are_now():
    a, b = _variables()
    bound, _, planner = _planning([rules_lib.Rule(a, lr_scale=0.5)], [keras.optimizers.SGD(0.1)])
    plan = planner.make([a, b])
    assert [p.rules for p in plan.variables] == [("r0",), ()]
    assert len(plan.groups) == 2
    bound[0].frozen = True
    plan = planner.make([a, b])
    assert [p.variable for p in plan.trainable] == [b]


def test_decay_resolved_at_make_and_changed_after_it():
    a, b = _variables()
    adamw = keras.optimizers.AdamW(0.1, weight_decay=0.01)
    _, _, planner = _planning([], [adamw])
    plan = planner.make([a, b])
    assert [p.decay for p in plan.variables] == [0.01, 0.01]
    assert not planner.decay_changed()
    adamw.weight_decay = 0.5
    assert planner.decay_changed()
    plan = planner.make([a, b])
    assert not planner.decay_changed()
    assert [p.decay for p in plan.variables] == [0.5, 0.5]


def test_hold_moves_variables_to_another_updater_from_the_next_plan():
    a, b = _variables()
    _, updates, planner = _planning([], [keras.optimizers.Adam(0.1)])
    updates.build(planner.slot_holders(planner.make([a])))
    fresh = updates.add_fresh(0, [b])
    planner.hold([b], fresh)
    plan = planner.make([a, b])
    assert [(p.optimizer, p.updater) for p in plan.variables] == [(0, 0), (0, fresh)]
    assert {g.updater for g in plan.groups} == {0, fresh}


def test_built_on_is_recorded_once_and_drives_the_slot_holders():
    a, b = _variables()
    sgd = keras.optimizers.SGD(0.1, momentum=0.9)
    _, updates, planner = _planning([rules_lib.Rule(b, frozen=True)], [sgd])
    plan = planner.make([a, b])
    holders = planner.slot_holders(plan)
    assert holders == [[a]]
    updates.build(holders)
    planner.record_built_on(updates.optimizers)
    assert planner.built_on == [[plan_lib.path_of(a)]]
    planner.built_on[0].append("not recorded again")
    planner.record_built_on(updates.optimizers)
    assert planner.built_on[0][-1] == "not recorded again"
    # A loaded optimizer is built on the saved paths, not on the plan's.
    planner.built_on = [[plan_lib.path_of(a), plan_lib.path_of(b)]]
    assert planner.slot_holders(plan) == [[a, b]]


def test_saved_fresh_variables_are_left_to_their_fresh_optimizer():
    a, b = _variables()
    _, _, planner = _planning([], [keras.optimizers.Adam(0.1)])
    planner.saved_fresh = [(0, [plan_lib.path_of(b)])]
    assert planner.slot_holders(planner.make([a, b])) == [[a]]


def test_strict_applies_at_each_make():
    a, b = _variables()
    other = keras.Variable(np.ones(1, "float32"), name="other")
    _, _, planner = _planning([rules_lib.Rule(other, lr_scale=2.0)], [keras.optimizers.SGD(0.1)])
    with pytest.raises(ValueError, match="match no variable"):
        planner.make([a, b])
    planner.strict = False
    assert [p.rules for p in planner.make([a, b]).variables] == [(), ()]
