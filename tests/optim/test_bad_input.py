"""Careless and hostile input: a clear, early error (Keras' form "`arg`
must be X. Received: arg=value") or a defined behaviour, and a failed call
changes no state: model weights, optimizer variables (slots, scales, step
counter), rule multipliers, and whether the optimizer is built.

Tests marked `xfail(strict=True)` document library problems found here
(see docs/errors.md); each reason says what is wrong.
"""

import keras
import numpy as np
import pytest

import layerwise as lw
import layerwise.optim.transforms
from tests import helpers
from tests.conftest import BACKEND

# Keras' JAX trainer moves every variable's value into the jitted step's state
# (`_purge_model_variables`) before the first step, and writes it back only
# after the step returns: an error raised while the step is traced leaves the
# model's and the optimizer's variables without values. Plain Keras
# optimizers behave the same (an optimizer whose `apply` raises loses them
# too), so on JAX a failed `fit` step cannot leave the state unchanged.
JAX_LOSES_STATE_ON_TRACED_ERRORS = pytest.mark.xfail(
    BACKEND == "jax",
    strict=True,
    reason=(
        "Keras' JAX trainer purges variable values before tracing the "
        "train step; an error raised in the traced step loses them"
    ),
)


def _value(v):
    return np.array(keras.ops.convert_to_numpy(v))


def _state(model, opt):
    """Everything a failed call must leave alone."""
    return {
        "weights": [_value(v) for v in model.variables] if model is not None else [],
        "optimizer": [(v.path, _value(v)) for v in opt.variables],
        "iterations": int(_value(opt.iterations)),
        "scales": [r.lr_scale for r in opt.rules],
        "built": (opt.built, opt.inner_optimizer.built),
    }


def _assert_same_state(before, after):
    assert after["built"] == before["built"]
    assert after["iterations"] == before["iterations"]
    assert after["scales"] == before["scales"]
    assert [p for p, _ in after["optimizer"]] == [p for p, _ in before["optimizer"]]
    for (path, a), (_, b) in zip(after["optimizer"], before["optimizer"]):
        np.testing.assert_array_equal(a, b, err_msg=path)
    assert len(after["weights"]) == len(before["weights"])
    for a, b in zip(after["weights"], before["weights"]):
        np.testing.assert_array_equal(a, b)


def _assert_nothing_trained(before, after):
    """As `_assert_same_state`, except that the failed call may have built
    the optimizer (as `fit` does before its first step): slots it created
    must still hold their initial zeros."""
    assert after["iterations"] == before["iterations"]
    assert after["scales"] == before["scales"]
    for a, b in zip(after["weights"], before["weights"]):
        np.testing.assert_array_equal(a, b)
    old = dict(before["optimizer"])
    for path, value in after["optimizer"]:
        if path in old:
            np.testing.assert_array_equal(value, old[path], err_msg=path)
        else:
            assert not np.any(value), f"{path} was created and changed"


def _fit(model, epochs=1, **kwargs):
    x, y = helpers.data(n=32)
    return model.fit(x, y, batch_size=16, epochs=epochs, shuffle=False, verbose=0, **kwargs)


# ----------------------------------------------------------------------
# Rules that refer to layers the optimizer does not train.


def test_layer_of_another_model_fails_at_build_and_changes_nothing():
    """A rule given a layer of a different model (same names, same paths)
    selects nothing: `fit` fails at build with the rule's name, and the
    optimizer stays unbuilt and usable."""
    model = helpers.mlp(seed=0)
    other = helpers.mlp(seed=1, name="other")
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.Adam(0.01),
        [lw.Rule(other.get_layer("l0"), lr_scale=0.5, name="other_l0")],
    )
    model.compile(opt, "mse")
    before = _state(model, opt)
    with pytest.raises(ValueError, match=r"Rules \['other_l0'\] match no variable.*strict=False"):
        _fit(model)
    _assert_same_state(before, _state(model, opt))
    assert before["built"] == (False, False)
    # Not half-built: the same optimizer still builds on the model it names.
    opt.build(other.trainable_variables)
    assert [r["lr_scale"] for r in opt.summary_rows()] == [0.5, 0.5, 1.0, 1.0, 1.0, 1.0]


def test_rule_matching_nothing_names_its_selector():
    model = helpers.mlp(seed=0)
    other = helpers.mlp(seed=1, name="other")
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.SGD(), [lw.Rule(other.get_layer("l0"), lr_scale=0.5)]
    )
    with pytest.raises(ValueError, match=r"layer 'l0'"):
        opt.build(model.trainable_variables)


def test_layer_of_another_model_does_nothing_when_not_strict():
    """With `strict=False` the foreign rule is inert: one SGD step equals
    plain SGD."""
    model = helpers.mlp(seed=0)
    other = helpers.mlp(seed=1, name="other")
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.SGD(0.1),
        [lw.Rule(other.get_layer("l0"), lr_scale=0.0)],
        strict=False,
    )
    grads = [keras.ops.ones(v.shape) for v in model.trainable_variables]
    expected = [w - 0.1 for w in helpers.weights(model)]
    opt.apply(grads, model.trainable_variables)
    assert all(r["rules"] == [] for r in opt.summary_rows())
    helpers.assert_weights_close(helpers.weights(model), expected)


def test_unbuilt_layer_of_the_model_binds_when_fit_builds_it():
    """A rule may name a layer before it has variables: the layer is looked
    up when the optimizer is built (here by `fit`), so the rule selects the
    variables created since (lr_scale 0 keeps them still; the others move)."""
    first = keras.layers.Dense(4, name="first")
    model = keras.Sequential([first, keras.layers.Dense(2, name="second")])
    assert not model.built and not first.variables
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.SGD(0.1), [lw.Rule(first, lr_scale=0.0, name="first")]
    )
    model.compile(opt, "mse")
    x, y = helpers.data(n=32)
    model.build(x.shape)
    before = helpers.weights(model)
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    moved = [not np.array_equal(a, b) for a, b in zip(helpers.weights(model), before)]
    assert moved == [False, False, True, True]
    assert [r["rules"] for r in opt.summary_rows()] == [["first"], ["first"], [], []]


def test_unbuilt_model_as_match_selects_everything_once_built():
    """`Rule(model)` on an unbuilt model selects all its variables at build."""
    model = keras.Sequential([keras.layers.Dense(3), keras.layers.Dense(2)])
    opt = lw.LayerwiseOptimizer(keras.optimizers.SGD(0.1), [lw.Rule(model, lr_scale=0.5)])
    model.build((None, 6))
    opt.build(model.trainable_variables)
    assert [r["lr_scale"] for r in opt.summary_rows()] == [0.5] * 4


def test_layer_that_is_never_built_fails_at_build_and_changes_nothing():
    model = helpers.mlp()
    stray = keras.layers.Dense(3, name="stray")
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.Adam(), [lw.Rule(stray, lr_scale=0.5, name="stray")]
    )
    before = _state(model, opt)
    with pytest.raises(ValueError, match=r"Rules \['stray'\] match no variable"):
        opt.build(model.trainable_variables)
    _assert_same_state(before, _state(model, opt))


def test_building_on_an_unbuilt_model_fails_at_the_first_update():
    """`opt.build(model.trainable_variables)` before the model is built
    passes an empty list, which builds (as Keras builds an optimizer for a
    model without trainable weights); the first update of a variable then
    says what happened, before any state changes."""
    model = keras.Sequential([keras.layers.Dense(3, name="d")])
    opt = lw.LayerwiseOptimizer(keras.optimizers.SGD(), [lw.Rule(".*d/.*", lr_scale=0.5)])
    opt.build(model.trainable_variables)
    model.build((None, 2))
    kernel = _value(model.layers[0].kernel)
    grads = [keras.ops.ones(v.shape) for v in model.trainable_variables]
    with pytest.raises(ValueError, match="built on no variable.*build the optimizer after the model"):
        opt.apply(grads, model.trainable_variables)
    with pytest.raises(ValueError, match="built on no variable"):
        opt.apply(grads)
    np.testing.assert_array_equal(_value(model.layers[0].kernel), kernel)
    assert int(opt.iterations) == 0


# ----------------------------------------------------------------------
# Variables the optimizer was not built on.


def test_apply_with_a_variable_added_after_build_changes_nothing():
    """The unknown variable is refused before any gradient work: no slot,
    weight or step counter moves, and the known variables still train."""
    a = keras.Variable(np.ones(3, "float32"), name="a")
    b = keras.Variable(np.ones(2, "float32"), name="b")
    opt = lw.LayerwiseOptimizer(keras.optimizers.Adam(0.1), [lw.Rule(a, lr_scale=0.5)])
    opt.apply([keras.ops.ones(3)], [a])
    before = _state(None, opt)
    values = (_value(a), _value(b))
    with pytest.raises(ValueError, match=r"built with\. Received 1 other\(s\): \['b'\].*Create a new optimizer"):
        opt.apply([keras.ops.ones(3), keras.ops.ones(2)], [a, b])
    _assert_same_state(before, _state(None, opt))
    np.testing.assert_array_equal(_value(a), values[0])
    np.testing.assert_array_equal(_value(b), values[1])
    opt.apply([keras.ops.ones(3)], [a])
    assert int(_value(opt.iterations)) == 2


@JAX_LOSES_STATE_ON_TRACED_ERRORS
def test_unfreezing_a_layer_with_trainable_after_build_is_refused():
    """Setting `layer.trainable = True` after the optimizer was built adds
    variables it has no slots for: `fit` refuses and nothing changes (to
    unfreeze during training, use a `frozen` rule and `set_frozen`)."""
    model = helpers.mlp()
    model.get_layer("l0").trainable = False
    opt = lw.LayerwiseOptimizer(keras.optimizers.Adam(0.01), [lw.Rule("l1/.*", lr_scale=0.5)])
    model.compile(opt, "mse")
    _fit(model)
    model.get_layer("l0").trainable = True
    model.compile(opt, "mse")
    before = _state(model, opt)
    # TensorFlow/torch: the variables it was not built with, named; JAX:
    # Keras' count check in `stateless_apply`.
    with pytest.raises(ValueError, match=r"\['l0/kernel', 'l0/bias'\]|corresponding 1:1"):
        _fit(model)
    _assert_same_state(before, _state(model, opt))


def _reused_on_a_second_model(jit_compile):
    """An optimizer trained on a first model, compiled into a second one of
    the same architecture (same paths and shapes: only the variables'
    identity tells the models apart)."""
    first = helpers.mlp(seed=0)
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.Adam(0.01), [lw.Rule(first.get_layer("l0"), frozen=True)]
    )
    first.compile(opt, "mse", jit_compile=jit_compile)
    _fit(first)
    second = helpers.mlp(seed=1, name="second")
    second.compile(opt, "mse", jit_compile=jit_compile)
    return first, second, opt


def test_optimizer_reused_on_a_second_model_is_refused(jit_compile):
    """Compiling a second model with an optimizer already built on a first
    one fails clearly at the first step, naming the cause and the fix, on
    every backend: TensorFlow and torch name the second model's variables
    (`apply`); JAX's trainer passes only values (`stateless_apply`), so the
    message names the first model's variables the step left out. The first
    model's weights are untouched."""
    first, second, opt = _reused_on_a_second_model(jit_compile)
    weights = helpers.weights(first)
    with pytest.raises(ValueError, match=r"(other\(s\)|not in the step): \['l0/kernel'.*"
                       r"compiled into a second model.*from_config"):
        _fit(second)
    helpers.assert_weights_close(helpers.weights(first), weights, rtol=0, atol=0)


@JAX_LOSES_STATE_ON_TRACED_ERRORS
def test_optimizer_reused_on_a_second_model_changes_nothing():
    """The refused step leaves the second model and the optimizer as they
    were (on JAX the error comes from the traced step, after the trainer
    took their values)."""
    _, second, opt = _reused_on_a_second_model(jit_compile=False)
    before = _state(second, opt)
    with pytest.raises(ValueError, match="compiled into a second model"):
        _fit(second)
    _assert_same_state(before, _state(second, opt))


# ----------------------------------------------------------------------
# Conflicting rules: defined, not an error.


def test_conflicting_rules_last_one_wins_in_summary_and_in_a_step():
    """`weight_decay` and `frozen` come from the last matching rule that
    sets them, `lr_scale`s multiply; `summary_rows` shows it and one SGD
    step does exactly that (decay, then the update, at lr * scale)."""
    model = helpers.mlp()
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.SGD(0.1),
        [
            lw.Rule(".*", weight_decay=0.1, frozen=True, lr_scale=0.5, name="all"),
            lw.Rule("l0/.*", weight_decay=0.0, frozen=False, name="l0"),
            lw.Rule("l0/kernel", weight_decay=0.5, lr_scale=0.4, name="l0k"),
            lw.Rule("l2/.*", frozen=False, name="l2"),
            lw.Rule("l2/bias", frozen=True, name="l2b"),
        ],
    )
    variables = model.trainable_variables
    opt.build(variables)
    rows = {r["path"]: r for r in opt.summary_rows()}
    expected = {  # path: (lr scale, weight decay) or None when frozen
        "l0/kernel": (0.2, 0.5),
        "l0/bias": (0.5, None),
        "l1/kernel": None,
        "l1/bias": None,
        "l2/kernel": (0.5, 0.1),
        "l2/bias": None,
    }
    for path, want in expected.items():
        assert rows[path]["frozen"] == (want is None), path
        if want is not None:
            assert rows[path]["lr_scale"] == pytest.approx(want[0]), path
            assert rows[path]["effective_lr"] == pytest.approx(0.1 * want[0]), path
            assert rows[path]["weight_decay"] == want[1], path
    before = {v.path: _value(v) for v in variables}
    grads = [keras.ops.full(v.shape, 2.0) for v in variables]
    opt.apply(grads, variables)
    for v in variables:
        want = expected[v.path]
        if want is None:
            np.testing.assert_array_equal(_value(v), before[v.path], err_msg=v.path)
            continue
        lr = 0.1 * want[0]
        decayed = before[v.path] * (1.0 - lr * (want[1] or 0.0))
        np.testing.assert_allclose(_value(v), decayed - lr * 2.0, rtol=1e-6, atol=1e-7, err_msg=v.path)


# ----------------------------------------------------------------------
# Learning-rate multipliers.


@pytest.mark.parametrize(
    "value",
    [True, False, 1 + 0j, [0.5], np.float64(-1.0), np.float32("nan"), "0.5"],
    ids=["True", "False", "complex", "list", "np-negative", "np-nan", "str"],
)
def test_rule_lr_scale_that_is_not_a_finite_number_is_refused(value):
    with pytest.raises((TypeError, ValueError), match=r"`lr_scale` must be a finite number >= 0.*Received: lr_scale="):
        lw.Rule(".*", lr_scale=value)


def test_numpy_lr_scale_is_accepted_as_a_float():
    rule = lw.Rule(".*", lr_scale=np.float32(0.25))
    assert rule.lr_scale == 0.25 and type(rule.lr_scale) is float


def test_rule_lr_scale_overflowing_float32_is_refused():
    with pytest.raises(ValueError, match="`lr_scale` must be"):
        lw.Rule(".*", lr_scale=1e39)


def _built_scale_setup():
    variable = keras.Variable(np.zeros(2, "float32"), name="w")
    schedule = keras.optimizers.schedules.ExponentialDecay(1.0, 10, 0.5)
    other = keras.Variable(np.zeros(2, "float32"), name="u")
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.SGD(1.0),
        [lw.Rule(variable, lr_scale=0.5, name="r"), lw.Rule(other, lr_scale=schedule, name="s")],
    )
    opt.build([variable, other])
    return variable, other, opt


@pytest.mark.parametrize(
    "value",
    [-1.0, float("nan"), float("inf"), True, "0.5", None, [0.1]],
    ids=["negative", "nan", "inf", "bool", "str", "None", "list"],
)
def test_set_lr_scale_bad_value_leaves_the_scale_and_the_step_unchanged(value):
    """Refused before the multiplier variable is touched: the next step still
    moves the variable by lr * 0.5 * g."""
    variable, other, opt = _built_scale_setup()
    before = _state(None, opt)
    with pytest.raises(ValueError, match=r"`value` must be a finite number >= 0. Received: value="):
        opt.set_lr_scale("r", value)
    _assert_same_state(before, _state(None, opt))
    opt.apply([keras.ops.ones(2), keras.ops.zeros(2)], [variable, other])
    np.testing.assert_allclose(_value(variable), [-0.5, -0.5])


@pytest.mark.parametrize(
    "value, error, message",
    [
        (-0.5, ValueError, "`lr_scale` must be a finite number >= 0"),
        (float("nan"), ValueError, "`lr_scale` must be a finite number >= 0"),
        ("fast", TypeError, "`lr_scale` must be"),
        (keras.optimizers.schedules.ExponentialDecay(1.0, 10, 0.5), TypeError, "can only be changed to a number"),
        (lambda step: 1.0, TypeError, "can only be changed to a number"),
    ],
    ids=["negative", "nan", "str", "schedule", "callable"],
)
def test_bound_rule_lr_scale_setter_refuses_and_keeps_the_scale(value, error, message):
    _, _, opt = _built_scale_setup()
    before = _state(None, opt)
    with pytest.raises(error, match=message):
        opt.rules[0].lr_scale = value
    _assert_same_state(before, _state(None, opt))
    assert opt.rules[0].has_constant_scale


def test_set_lr_scale_on_a_schedule_or_unknown_rule_changes_nothing():
    _, _, opt = _built_scale_setup()
    before = _state(None, opt)
    with pytest.raises(ValueError, match="only constant multipliers can be set at runtime"):
        opt.set_lr_scale("s", 0.1)
    with pytest.raises(ValueError, match=r"one of this optimizer's rules \['r', 's'\]. Received: name='t'"):
        opt.set_lr_scale("t", 0.1)
    _assert_same_state(before, _state(None, opt))


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_set_lr_scale_overflowing_float32_leaves_the_scale_unchanged():
    _, _, opt = _built_scale_setup()
    with pytest.raises(ValueError, match="`value` must be"):
        opt.set_lr_scale("r", 1e39)
    assert opt.get_rule("r").lr_scale == 0.5


# ----------------------------------------------------------------------
# Transforms and hooks returning the wrong thing.


class _DropOne(lw.GradientTransform):
    """Returns one gradient too few."""

    def __call__(self, grads, variables):
        return list(grads)[:-1]


@pytest.mark.parametrize(
    "transform, message",
    [
        (lambda g, v: keras.ops.sum(g), r"rule 'bad'.*l1/kernel.*expected shape \(5, 4\), received \(\)"),
        (lambda g, v: keras.ops.cast(g, "float16"), r"rule 'bad'.*keep the variables' dtype.*l1/kernel"),
        (lambda g, v: None, r"rule 'bad'.*l1/kernel.*received None"),
        (_DropOne(), r"rule 'bad'.*must return gradients, one per variable. Expected 2, received 1"),
    ],
    ids=["shape", "dtype", "none", "count"],
)
def test_transform_returning_wrong_gradients_fails_fit_and_changes_nothing(transform, message):
    """The error names the rule and the variable; no weight, slot or step
    counter moves (on JAX, Keras loses the state instead: see the mark)."""
    model = helpers.mlp()
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.Adam(0.01),
        [lw.Rule("l0/.*", lr_scale=0.5), lw.Rule("l1/.*", gradient=transform, name="bad")],
    )
    model.compile(opt, "mse")
    before = _state(model, opt)
    with pytest.raises(ValueError, match=message):
        _fit(model)
    _assert_nothing_trained(before, _state(model, opt))


class _ReturnsNone(lw.GradientTransform):
    """A transform that forgets to return its gradients."""

    def __call__(self, grads, variables):
        return None


@pytest.mark.parametrize("where", ["hook", "transform"])
def test_hook_or_transform_returning_none_changes_nothing(where):
    """Whatever the message (see the next test), the failed step moves
    nothing."""
    variable = keras.Variable(np.ones(2, "float32"), name="w")

    if where == "hook":
        opt = lw.LayerwiseOptimizer(keras.optimizers.SGD(0.1), gradient_hook=lambda g, v: None)
    else:
        opt = lw.LayerwiseOptimizer(keras.optimizers.SGD(0.1), [lw.Rule(variable, gradient=_ReturnsNone())])
    if BACKEND != "jax":
        opt.build([variable])  # on JAX, `build` itself fails (see below)
    before = _state(None, opt)
    with pytest.raises(TypeError, match="must return a list of gradients"):
        # On JAX the hook and transforms run symbolically in `build`;
        # elsewhere the step fails before any update.
        if BACKEND == "jax":
            opt.build([variable])
        else:
            opt.apply([keras.ops.ones(2)], [variable])
    _assert_same_state(before, _state(None, opt))
    np.testing.assert_array_equal(_value(variable), 1.0)


@pytest.mark.parametrize("where", ["hook", "transform"])
def test_hook_or_transform_returning_none_is_reported_clearly(where):
    variable = keras.Variable(np.ones(2, "float32"), name="w")

    if where == "hook":
        opt = lw.LayerwiseOptimizer(keras.optimizers.SGD(0.1), gradient_hook=lambda g, v: None)
        what = "gradient_hook"
    else:
        opt = lw.LayerwiseOptimizer(keras.optimizers.SGD(0.1), [lw.Rule(variable, gradient=_ReturnsNone(), name="bad")])
        what = "rule 'bad'"
    with pytest.raises((TypeError, ValueError), match=f"{what}.*must return.*Received: None"):
        opt.apply([keras.ops.ones(2)], [variable])


def test_hook_with_the_wrong_signature_is_refused_at_construction():
    with pytest.raises(TypeError, match=r"`gradient_hook` must be a callable taking 2 positional argument\(s\).*\(g\)"):
        lw.LayerwiseOptimizer(keras.optimizers.SGD(), gradient_hook=lambda g: g)


# ----------------------------------------------------------------------
# The optimizer's own arguments.


def _inner_is_untouched(inner):
    """A refused constructor leaves the inner optimizer free to wrap again."""
    assert not inner.built
    opt = lw.LayerwiseOptimizer(inner, [lw.Rule(".*", lr_scale=0.5, name="ok")])
    assert opt.inner_optimizer is inner and opt.get_rule("ok").lr_scale == 0.5


@pytest.mark.parametrize(
    "rules, message",
    [
        ("l0/.*", r"`rules` must be a list of `Rule`s. Received: rules='l0/.\*'"),
        (None, r"`rules` must be a list of `Rule`s. Received: rules=None"),
        ({"a": lw.Rule(".*")}, r"`rules` must be a list of `Rule`s"),
        (iter([lw.Rule(".*")]), r"`rules` must be a list of `Rule`s"),
        ([lw.Rule], r"`layerwise.Rule` objects. Received an element: <class"),
        ([lw.Rule(".*"), None], r"`layerwise.Rule` objects. Received an element: None"),
        ([{"match": ".*", "lr_scale": 0.5}], r"Received an element: \{'match'"),
        ([lw.clip_by_norm(1.0)], r"Received an element: ClipByNorm"),
    ],
    ids=["str", "None", "dict", "iterator", "class", "None-element", "dict-element", "transform"],
)
def test_rules_must_be_a_list_of_rule_objects(rules, message):
    inner = keras.optimizers.SGD()
    with pytest.raises(TypeError, match=message):
        lw.LayerwiseOptimizer(inner, rules)
    _inner_is_untouched(inner)


def test_a_single_rule_is_accepted_as_a_list_of_one():
    opt = lw.LayerwiseOptimizer(keras.optimizers.SGD(), lw.Rule(".*", lr_scale=0.5))
    assert [r.name for r in opt.rules] == ["rule_0"]


@pytest.mark.parametrize("strict", [1, 0, "yes", None], ids=repr)
def test_strict_must_be_a_bool(strict):
    inner = keras.optimizers.SGD()
    with pytest.raises(TypeError, match=r"`strict` must be a bool. Received: strict="):
        lw.LayerwiseOptimizer(inner, [lw.Rule(".*")], strict=strict)
    _inner_is_untouched(inner)


def test_unknown_keyword_arguments_are_refused():
    inner = keras.optimizers.SGD()
    with pytest.raises(ValueError, match=r"Argument\(s\) not recognized: \{'lr_scales': 0.5\}"):
        lw.LayerwiseOptimizer(inner, [], lr_scales=0.5)
    with pytest.raises(ValueError, match="`ema_momentum`: set it on the inner optimizer"):
        lw.LayerwiseOptimizer(inner, [], ema_momentum=0.9)
    with pytest.raises(TypeError, match="positional argument"):
        lw.LayerwiseOptimizer(inner, [], lambda g, v: g)  # gradient_hook is keyword-only
    _inner_is_untouched(inner)
    with pytest.raises(TypeError, match=r"unknown argument\(s\): \{'lr': 0.1\}"):
        lw.Rule(".*", lr=0.1)
    with pytest.raises(TypeError, match="one positional argument"):
        lw.Rule(".*", 0.5)  # lr_scale is keyword-only


@pytest.mark.parametrize(
    "make_inner, attribute, name",
    [
        (lambda: keras.optimizers.Adam(use_ema=True), "use_ema", 3),
        (lambda: keras.optimizers.SGD(gradient_accumulation_steps=2), "gradient_accumulation_steps", "a/b"),
    ],
    ids=["use_ema", "accumulation"],
)
def test_failed_construction_leaves_the_inner_optimizer_unchanged(make_inner, attribute, name):
    inner = make_inner()
    value = getattr(inner, attribute)
    with pytest.raises(ValueError, match="`name` must be a string"):
        lw.LayerwiseOptimizer(inner, name=name)
    assert getattr(inner, attribute) == value


def test_one_inner_optimizer_wrapped_twice_is_refused():
    inner = keras.optimizers.Adam(0.01)
    first_model, second_model = helpers.mlp(seed=0), helpers.mlp(seed=1, name="second")
    first = lw.LayerwiseOptimizer(inner)
    before = helpers.weights(second_model)
    with pytest.raises(ValueError, match="already belongs to another LayerwiseOptimizer"):
        lw.LayerwiseOptimizer(inner)
    # The refused wrapper took nothing: the first one still trains, and the
    # second model was never touched.
    first_model.compile(first, "mse")
    _fit(first_model)
    assert int(first.iterations) == 2
    helpers.assert_weights_close(helpers.weights(second_model), before, rtol=0, atol=0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"weight_decay": True}, r"`weight_decay` must be a finite number >= 0. Received: weight_decay=True"),
        ({"weight_decay": float("inf")}, r"`weight_decay` must be a finite number >= 0"),
        ({"frozen": "yes"}, r"`frozen` must be True, False or None. Received: frozen='yes'"),
        ({"gradient": None}, r"gradient transform must be .* Received: transform=None"),
        ({"gradient": lw.optim.transforms.ClipByNorm}, r"Received: transform=<class"),
        ({"name": 3}, r"`name` must be a non-empty string. Received: name=3"),
    ],
    ids=["wd-bool", "wd-inf", "frozen-str", "gradient-None", "gradient-class", "name-int"],
)
def test_bad_rule_settings_are_refused(kwargs, message):
    with pytest.raises((TypeError, ValueError), match=message):
        lw.Rule(".*", **kwargs)


# ----------------------------------------------------------------------
# Construction and step errors, each in one line.


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
    assert all(r["lr_scale"] == 1.0 for r in opt.summary_rows())


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
    with pytest.raises(ValueError, match="keep the variables' dtype"):
        opt.apply([keras.ops.ones(2)], [variable])


def test_hook_returning_wrong_count_is_reported():
    variables = [keras.Variable(np.zeros(2, "float32"), name=f"w{i}") for i in range(2)]
    opt = lw.LayerwiseOptimizer(keras.optimizers.SGD(), gradient_hook=lambda g, v: g[:1])
    with pytest.raises(ValueError, match="gradient_hook must return gradients, one per variable"):
        opt.apply([keras.ops.ones(2), keras.ops.ones(2)], variables)


def test_plan_before_build_is_an_error():
    with pytest.raises(ValueError, match="not built yet"):
        lw.LayerwiseOptimizer(keras.optimizers.SGD()).plan


def test_applying_no_gradients_is_a_no_op():
    opt = lw.LayerwiseOptimizer(keras.optimizers.SGD())
    opt.apply([], [])
    assert not opt.built


# ----------------------------------------------------------------------
# Cases a new user met in silence (issue #24): each now raises or warns,
# naming the cause and the fix.


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: lw.Rule(".*", 0.1), r"`Rule\(match, lr_scale=0.1\)`"),
        (lambda: lw.Rule(".*", True), r"`Rule\(match, frozen=True\)`"),
        (lambda: lw.Rule(".*", keras.optimizers.SGD()), r"`Rule\(match, optimizer="),
        (lambda: lw.Rule(".*", learning_rate=0.1), r"`lr_scale=`.*learning_rate=0.1"),
        (lambda: lw.Rule(".*", lr=0.1), r"Received unknown argument\(s\): \{'lr': 0.1\}"),
    ],
)
def test_rule_settings_given_wrongly_name_the_keyword(call, message):
    with pytest.raises(TypeError, match=message):
        call()


def test_rule_on_a_layer_set_untrainable_names_trainable():
    """Keras builds the optimizer on trainable variables only: a rule on a
    layer set `trainable=False` matches nothing, and the error says why."""
    model = helpers.mlp()
    model.get_layer("l0").trainable = False
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.SGD(), [lw.Rule(model.get_layer("l0"), lr_scale=0.5, name="l0")]
    )
    with pytest.raises(ValueError, match=r"Rules \['l0'\] match no variable.*`trainable=False` "
                       r"\(\['l0/kernel', 'l0/bias'\]\).*`frozen=True`"):
        opt.build(model.trainable_variables)
    assert not opt.built


def test_layer_set_trainable_under_a_freezing_rule_warns_and_stays(jit_compile):
    """On JAX and torch `layer.trainable = True` marks the variables the rule
    froze trainable again: a warning names them and the fix. On TensorFlow
    the assignment does nothing at all: the layer is trainable already (the
    rule marked its variables, not the layer) and Keras' TensorFlow layers
    skip assigning an attribute the value it has
    (`KerasAutoTrackable.__setattr__`), so the setter never runs. The
    variables stay untrainable, get no gradient and stay unchanged, as the
    rule says; no state records the call, so there is nothing to warn
    about. (The TensorFlow branch pins that Keras behaviour: if Keras drops
    the shortcut, the warning appears there too and this branch fails.)"""
    model = helpers.mlp()
    opt = lw.LayerwiseOptimizer(keras.optimizers.SGD(0.1), [lw.Rule("l0/.*", frozen=True, name="l0")])
    model.compile(opt, "mse", jit_compile=jit_compile)
    _fit(model)
    layer = model.get_layer("l0")
    kernel = _value(layer.kernel)
    layer.trainable = True
    model.compile(opt, "mse", jit_compile=jit_compile)
    if BACKEND == "tensorflow":
        assert not layer.kernel.trainable
        _fit(model)
    else:
        with pytest.warns(UserWarning, match=r"'l0/kernel'.*\['l0'\].*set_frozen"):
            _fit(model)
    np.testing.assert_array_equal(_value(layer.kernel), kernel)


def test_layer_set_untrainable_then_trainable_under_a_freezing_rule_warns(jit_compile):
    """When the layer's flag does change (`False`, then `True`, as in
    Keras' transfer-learning guide), Keras' setter marks the variables the
    rule froze trainable again on every backend, TensorFlow included: the
    warning names them, the rule and the fix, and they stay unchanged."""
    model = helpers.mlp()
    opt = lw.LayerwiseOptimizer(keras.optimizers.SGD(0.1), [lw.Rule("l0/.*", frozen=True, name="l0")])
    model.compile(opt, "mse", jit_compile=jit_compile)
    _fit(model)
    layer = model.get_layer("l0")
    kernel = _value(layer.kernel)
    layer.trainable = False
    layer.trainable = True
    model.compile(opt, "mse", jit_compile=jit_compile)
    with pytest.warns(UserWarning, match=r"\['l0/kernel', 'l0/bias'\] are marked `trainable=True` "
                      r"again.*\['l0'\].*set_frozen"):
        _fit(model)
    np.testing.assert_array_equal(_value(layer.kernel), kernel)


def test_optimizer_of_another_model_names_the_cause():
    """Applied to another model's variables (a second `compile` with the
    same optimizer), the error names them and the fix, not Keras' dump of
    the variable (`fit` on a second model: see
    `test_optimizer_reused_on_a_second_model_is_refused`)."""
    first, second = helpers.mlp(seed=0), helpers.mlp(seed=1, name="second")
    opt = lw.LayerwiseOptimizer(keras.optimizers.SGD(0.1), [lw.Rule("l0/.*", lr_scale=0.5)])
    opt.build(first.trainable_variables)
    before = _state(second, opt)
    grads = [keras.ops.ones(v.shape) for v in second.trainable_variables]
    with pytest.raises(ValueError, match=r"built with\. Received 6 other\(s\): \['l0/kernel'.*"
                       r"second model.*from_config"):
        opt.apply(grads, second.trainable_variables)
    _assert_same_state(before, _state(second, opt))


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"source": 5, "paths": ["l0/kernel"]}, r"\['source'\].*one of its 1 optimizer\(s\) \(0 to 0\).*source=5"),
        ({"source": "0", "paths": ["l0/kernel"]}, r"source='0'"),
        ({"source": 0, "paths": [3]}, r"\['paths'\].*paths=\[3\]"),
    ],
)
def test_saved_config_naming_a_missing_optimizer_is_refused(entry, message):
    """A crafted config whose `unfrozen_at_runtime` entry names an optimizer
    that does not exist: refused at `from_config`, in Keras' form, before
    any optimizer is built (it was an `IndexError` at build)."""
    model = helpers.mlp()
    opt = lw.LayerwiseOptimizer(keras.optimizers.Adam(), [lw.Rule("l0/.*", frozen=True, name="l0")])
    opt.build(model.trainable_variables)
    opt.set_frozen("l0", False)
    config = opt.get_config()
    assert [e["source"] for e in config["unfrozen_at_runtime"]] == [0]
    config["unfrozen_at_runtime"] = [entry]
    with pytest.raises(ValueError, match=message):
        lw.LayerwiseOptimizer.from_config(config)
    config["unfrozen_at_runtime"] = []
    config["built_on"] = [[], []]
    with pytest.raises(ValueError, match=r"`built_on`.*1 optimizer\(s\).*Received: 2 entries"):
        lw.LayerwiseOptimizer.from_config(config)
