"""Bad input fails early, in Keras' message form, and changes nothing."""

import keras
import numpy as np
import pytest

import layerwise as lw
from tests import helpers


def _value(v):
    return np.array(keras.ops.convert_to_numpy(v))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"lr_scale": -0.1}, "`lr_scale` must be a finite number >= 0"),
        ({"lr_scale": float("nan")}, "`lr_scale` must be a finite number >= 0"),
        ({"lr_scale": float("inf")}, "`lr_scale` must be a finite number >= 0"),
        ({"lr_scale": "fast"}, "`lr_scale` must be"),
        ({"lr_scale": lambda a, b: 1.0}, "1 positional"),
        ({"weight_decay": -1.0}, "`weight_decay` must be"),
        ({"frozen": 1}, "`frozen` must be True, False or None"),
        ({"gradient": [3.0]}, "gradient transform must be"),
        ({"gradient": [lambda g: g]}, "2 positional"),
        ({"name": ""}, "`name` must be a non-empty string"),
    ],
)
def test_bad_rule_arguments(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        lw.Rule(".*", **kwargs)


@pytest.mark.parametrize(
    "make_inner, message",
    [
        (lambda: keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD()), "wrap the other way"),
        (lambda: keras.optimizers.MultiOptimizer(lambda v: keras.optimizers.SGD()), "MultiOptimizer"),
        (lambda: lw.LayerwiseOptimizer(keras.optimizers.SGD()), "rules of both in one list"),
        (lambda: "adam", "must be a `keras.optimizers.Optimizer`"),
        (
            lambda: keras.optimizers.Adam(use_ema=True, ema_overwrite_frequency=2),
            "not `ema_overwrite_frequency`",
        ),
    ],
)
def test_bad_inner_optimizer(make_inner, message):
    with pytest.raises((ValueError, TypeError), match=message):
        lw.LayerwiseOptimizer(make_inner())


def test_built_inner_optimizer_is_refused():
    inner = keras.optimizers.SGD()
    inner.build([keras.Variable([1.0])])
    with pytest.raises(ValueError, match="must not be built yet"):
        lw.LayerwiseOptimizer(inner)


@pytest.mark.parametrize("arg", ["learning_rate", "clipnorm", "weight_decay", "use_ema"])
def test_inner_only_arguments_are_refused(arg):
    with pytest.raises(ValueError, match="set it on the inner optimizer"):
        lw.LayerwiseOptimizer(keras.optimizers.SGD(), **{arg: 0.1})


def test_duplicate_rule_names_and_non_rules():
    with pytest.raises(ValueError, match="unique"):
        lw.LayerwiseOptimizer(
            keras.optimizers.SGD(), [lw.Rule("a", name="x"), lw.Rule("b", name="x")]
        )
    with pytest.raises(TypeError, match="`layerwise.Rule`"):
        lw.LayerwiseOptimizer(keras.optimizers.SGD(), ["l0/.*"])
    with pytest.raises(TypeError, match="`gradient_hook` must be"):
        lw.LayerwiseOptimizer(keras.optimizers.SGD(), gradient_hook=3)


def test_rule_matching_nothing_fails_at_build_and_builds_nothing():
    model = helpers.mlp()
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.Adam(), [lw.Rule("l0/.*", lr_scale=0.5), lw.Rule("decoder/.*", lr_scale=0.1, name="dec")]
    )
    with pytest.raises(ValueError, match=r"Rules \['dec'\] match no variable"):
        opt.build(model.trainable_variables)
    assert not opt.built and not opt.inner_optimizer.built
    assert len(opt.inner_optimizer.variables) == 2  # iteration + learning rate


def test_rule_matching_nothing_is_allowed_when_not_strict():
    model = helpers.mlp()
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.Adam(), [lw.Rule("decoder/.*", lr_scale=0.1)], strict=False
    )
    opt.build(model.trainable_variables)
    assert all(r["lr_scale"] == 1.0 for r in lw.summary_rows(opt))


def test_set_lr_scale_errors_leave_the_scale_unchanged():
    model = helpers.mlp()
    schedule = keras.optimizers.schedules.ExponentialDecay(1.0, 10, 0.5)
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.Adam(),
        [lw.Rule("l0/.*", lr_scale=0.5, name="body"), lw.Rule("l1/.*", lr_scale=schedule, name="mid")],
    )
    opt.build(model.trainable_variables)
    with pytest.raises(ValueError, match="`value` must be a finite number >= 0"):
        opt.set_lr_scale("body", -1.0)
    with pytest.raises(ValueError, match=r"one of this optimizer's rules \['body', 'mid'\]"):
        opt.set_lr_scale("head", 1.0)
    with pytest.raises(ValueError, match="only constant multipliers"):
        opt.set_lr_scale("mid", 1.0)
    assert opt.get_rule("body").lr_scale == 0.5


def test_transform_returning_wrong_shape_is_reported():
    variable = keras.Variable(np.zeros((2, 2), "float32"), name="w")
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.SGD(), [lw.Rule(variable, gradient=lambda g, v: keras.ops.sum(g), name="bad")]
    )
    with pytest.raises(ValueError, match=r"rule 'bad'.*expected shape \(2, 2\), received \(\)"):
        opt.apply([keras.ops.ones((2, 2))], [variable])
    np.testing.assert_array_equal(_value(variable), 0.0)


def test_transform_changing_dtype_is_reported():
    variable = keras.Variable(np.zeros(2, "float32"), name="w")
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.SGD(),
        [lw.Rule(variable, gradient=lambda g, v: keras.ops.cast(g, "float16"))],
    )
    with pytest.raises(ValueError, match="keep the gradients' dtype"):
        opt.apply([keras.ops.ones(2)], [variable])


def test_hook_returning_wrong_count_is_reported():
    variables = [keras.Variable(np.zeros(2, "float32"), name=f"w{i}") for i in range(2)]
    opt = lw.LayerwiseOptimizer(keras.optimizers.SGD(), gradient_hook=lambda g, v: g[:1])
    with pytest.raises(ValueError, match="gradient_hook must return one gradient per variable"):
        opt.apply([keras.ops.ones(2), keras.ops.ones(2)], variables)


def test_unknown_variable_in_apply_is_refused():
    a = keras.Variable(np.zeros(2, "float32"), name="a")
    b = keras.Variable(np.zeros(2, "float32"), name="b")
    opt = lw.LayerwiseOptimizer(keras.optimizers.SGD())
    opt.apply([keras.ops.ones(2)], [a])
    with pytest.raises(ValueError, match="Unknown variable"):
        opt.apply([keras.ops.ones(2)], [b])


def test_plan_before_build_is_an_error():
    with pytest.raises(ValueError, match="not built yet"):
        lw.LayerwiseOptimizer(keras.optimizers.SGD()).plan


def test_applying_no_gradients_is_a_no_op():
    opt = lw.LayerwiseOptimizer(keras.optimizers.SGD())
    opt.apply([], [])
    assert not opt.built
