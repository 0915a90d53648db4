"""The registry of the optimizers a `LayerwiseOptimizer` drives: fresh
optimizers for variables unfrozen at runtime, and the ratios between
their rates when Keras' callbacks set the base rate."""

import keras
import numpy as np
import pytest

from layerwise.optim import plan as plan_lib
from layerwise.optim import updaters as updaters_lib


def _setup(optimizers, variables):
    plan = plan_lib.make_plan([], variables, [])
    updates = updaters_lib.Updaters(optimizers)
    updates.build(plan_lib.slot_holders(plan, len(optimizers)))
    return updates


def test_fresh_optimizer_follows_its_source_rate_with_its_own_state():
    a = keras.Variable(np.ones(2, "float32"), name="a")
    inner = keras.optimizers.Adam(0.1, weight_decay=None)
    updates = _setup([inner], [a])
    index = updates.add_fresh(0, [a])
    assert updates.sources[index] == 0 and type(updates.updaters[index]) is type(inner)
    assert updates.fresh == [(0, ["a"])]
    inner.learning_rate = 0.2
    assert float(keras.ops.convert_to_numpy(updates.learning_rate(index))) == pytest.approx(0.2)


def test_learning_rate_ratios_survive_a_zero_base_rate():
    updates = updaters_lib.Updaters(
        [keras.optimizers.Adam(0.01), keras.optimizers.SGD(0.05)]
    )
    updates.set_learning_rate(0.0)
    updates.set_learning_rate(0.02)
    rates = [float(keras.ops.convert_to_numpy(o.learning_rate)) for o in updates.optimizers]
    np.testing.assert_allclose(rates, [0.02, 0.1], rtol=1e-6)
    assert updates.learning_rate_ratios() == pytest.approx([1.0, 5.0])

