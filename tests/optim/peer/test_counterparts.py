"""Public counterparts of Keras tests whose private reads would hide a bug.

Each test replays the steps of one Keras test (named in its docstring) on a
plain Keras optimizer and on the wrapped one, and compares what the public
API shows: values of the variables, `iterations`, public attributes. See
`expectations.MASKED`.
"""

import keras
import numpy as np
import pytest
from keras import ops

from tests.optim.peer import expectations
from tests.optim.peer import harness

BACKEND = keras.backend.backend()


def _variants(test_name):
    params = []
    for variant in harness.VARIANTS:
        cause = expectations.engine_bug(
            f"counterparts.{test_name}", variant.id, BACKEND
        )
        marks = []
        if cause is not None:
            marks.append(
                pytest.mark.xfail(strict=False, reason=f"engine bug: {cause.summary}")
            )
        params.append(pytest.param(variant, id=variant.id, marks=marks))
    return pytest.mark.parametrize("variant", params)


def _trajectory(optimizer, gradients, overwrite=False):
    """Values of two variables and `iterations` after each step."""
    a = keras.Variable([[1.0, 2.0], [3.0, 4.0]], name="a")
    b = keras.Variable([[1.0, 2.0], [3.0, 4.0]], name="b")
    a.overwrite_with_gradient = overwrite
    states = []
    for value in gradients:
        grad = ops.full((2, 2), value)
        optimizer.apply_gradients([(grad, a), (grad, b)])
        states.append((a.numpy(), b.numpy(), int(optimizer.iterations)))
    return states


def _assert_same(expected, actual):
    assert len(expected) == len(actual)
    for step, (e, a) in enumerate(zip(expected, actual)):
        np.testing.assert_allclose(a[0], e[0], atol=1e-6, err_msg=f"a, step {step}")
        np.testing.assert_allclose(a[1], e[1], atol=1e-6, err_msg=f"b, step {step}")
        assert a[2] == e[2], f"iterations after step {step}"


@_variants("test_gradient_accumulation_steps_is_readable")
def test_gradient_accumulation_steps_is_readable(variant):
    """`optimizer_test.OptimizerTest.test_gradient_accumulation`."""

    def make():
        return keras.optimizers.SGD(learning_rate=1.0, gradient_accumulation_steps=3)

    wrapped = variant.wrap(make())
    _assert_same(_trajectory(make(), [1.0] * 4), _trajectory(wrapped, [1.0] * 4))
    assert wrapped.gradient_accumulation_steps == 3


@_variants("test_overwrite_with_gradient_under_accumulation")
def test_overwrite_with_gradient_under_accumulation(variant):
    """`optimizer_test.OptimizerTest.
    test_overwrite_with_gradient_with_gradient_accumulation`."""

    def make():
        return keras.optimizers.SGD(learning_rate=1.0, gradient_accumulation_steps=2)

    gradients = [1.0, 2.0, 1.0]
    _assert_same(
        _trajectory(make(), gradients, overwrite=True),
        _trajectory(variant.wrap(make()), gradients, overwrite=True),
    )


@_variants("test_ema_overwrite_frequency")
def test_ema_overwrite_frequency(variant):
    """`adam_test.AdamTest.test_ema_overwrite_frequency` and
    `optimizer_test.OptimizerTest.test_ema` (which also pass on the wrapper
    themselves, since it hands Keras its averages)."""

    def make():
        return keras.optimizers.SGD(
            learning_rate=1.0,
            use_ema=True,
            ema_momentum=0.9,
            ema_overwrite_frequency=2,
        )

    gradients = [1.0, 1.0, 1.0, 1.0]
    _assert_same(
        _trajectory(make(), gradients), _trajectory(variant.wrap(make()), gradients)
    )
