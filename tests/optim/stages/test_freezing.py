"""The freezing stage on its own: which gradients reach the step, and the
`trainable` marks it owns."""

import keras
import numpy as np
import pytest

from layerwise.optim import plan as plan_lib
from layerwise.optim import rules as rules_lib
from layerwise.optim.stages import freezing


def _plan(variables, frozen):
    rules = [rules_lib.Rule(v, frozen=True).bind(f"f{i}", None) for i, v in enumerate(frozen)]
    return plan_lib.make_plan(rules, variables, [None] * len(rules))


def test_marks_only_what_it_froze_and_gives_it_back():
    a, b, c = (keras.Variable(np.ones(2, "float32"), name=n) for n in "abc")
    c.trainable = False  # the user's own choice, not the stage's
    stage = freezing.Freezing(True, id)
    stage.use_plan(_plan([a, b, c], [b, c]))
    assert (a.trainable, b.trainable, c.trainable) == (True, False, False)
    stage.use_plan(_plan([a, b, c], []))
    assert (a.trainable, b.trainable, c.trainable) == (True, True, False)


def test_subset_drops_frozen_and_missing_and_sets_overwrites_apart():
    a, b, c, d = (keras.Variable(np.ones(2, "float32"), name=n) for n in "abcd")
    d.overwrite_with_gradient = True
    stage = freezing.Freezing(False, id)
    stage.use_plan(_plan([a, b, c, d], [b]))
    g = np.ones(2, "float32")
    with pytest.warns(UserWarning, match="Gradients do not exist"):
        positions, grads, variables, overwrites = stage.trainable_subset([g, g, None, g], [a, b, c, d])
    assert positions == [0] and variables == [a]
    assert [v for _, v in overwrites] == [d]
    assert b.trainable  # `mark_untrainable=False` leaves the flags alone


def test_no_gradient_at_all_is_an_error_as_in_keras():
    a = keras.Variable(np.ones(2, "float32"), name="a")
    stage = freezing.Freezing(True, id)
    stage.use_plan(_plan([a], []))
    with pytest.raises(ValueError, match="No gradients provided for any variable"):
        stage.trainable_subset([None], [a])
