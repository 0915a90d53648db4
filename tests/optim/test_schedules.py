"""`LinearWarmup`: its values, its errors, its config, and a variable under
a warm-up multiplier following a plain optimizer at the warmed-up rate."""

import keras
import numpy as np
import pytest

import layerwise as lw
from layerwise.optim.schedules import LinearWarmup
from layerwise.optim.schedules import warmup
from tests import helpers


def _value(v):
    return np.array(keras.ops.convert_to_numpy(v))


@pytest.mark.parametrize("initial_scale", [0.0, 0.2])
def test_values_follow_the_formula(initial_scale):
    schedule = LinearWarmup(0.6, warmup_steps=5, initial_scale=initial_scale)
    for step in range(9):
        expected = initial_scale + (0.6 - initial_scale) * min(step / 5, 1.0)
        assert schedule.value_at(step) == pytest.approx(expected)
        assert float(_value(schedule(step))) == pytest.approx(expected, rel=1e-6)


def test_warmup_is_linear_warmup():
    assert warmup(0.3, 7) == LinearWarmup(0.3, warmup_steps=7)
    assert warmup(0.3, 7, initial_scale=0.1).initial_scale == 0.1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"scale": -0.1, "warmup_steps": 3}, "`scale` must be a finite number >= 0"),
        ({"scale": float("nan"), "warmup_steps": 3}, "`scale` must be"),
        ({"scale": 0.5, "warmup_steps": 0}, "`warmup_steps` must be an integer >= 1"),
        ({"scale": 0.5, "warmup_steps": 2.5}, "`warmup_steps` must be an integer >= 1"),
        ({"scale": 0.5, "warmup_steps": True}, "`warmup_steps` must be an integer >= 1"),
        ({"scale": 0.5, "warmup_steps": 3, "initial_scale": -1}, "`initial_scale` must be"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LinearWarmup(**kwargs)


def test_config_round_trip_through_keras_serialization():
    schedule = LinearWarmup(0.25, warmup_steps=10, initial_scale=0.05)
    config = keras.saving.serialize_keras_object(schedule)
    assert config["registered_name"] == "layerwise>LinearWarmup"
    restored = keras.saving.deserialize_keras_object(config)
    assert isinstance(restored, LinearWarmup) and restored == schedule
    rule = lw.Rule("a/.*", lr_scale=schedule, name="a")
    assert lw.Rule.from_config(rule.get_config()).lr_scale == schedule


@pytest.mark.parametrize("inner", ["sgd", "adam"])
def test_warmed_up_variable_follows_a_plain_optimizer_at_the_warmup_rate(inner):
    # Fixed gradients make the reference independent of the model: the body
    # variable under `lr_scale=warmup(0.3, 4)` must follow the plain optimizer
    # whose learning rate is lr * 0.3 * min(step / 4, 1), and the head the
    # plain optimizer at lr.
    lr, scale, steps = 0.05, 0.3, 4
    make = {"sgd": keras.optimizers.SGD, "adam": keras.optimizers.Adam}[inner]
    rng = np.random.default_rng(0)
    init = [rng.normal(size=(3, 2)).astype("float32"), rng.normal(size=(2,)).astype("float32")]
    grads = [
        [keras.ops.convert_to_tensor(rng.normal(size=w.shape).astype("float32")) for w in init]
        for _ in range(7)
    ]

    body, head = keras.Variable(init[0], name="body"), keras.Variable(init[1], name="head")
    opt = lw.LayerwiseOptimizer(make(lr), [lw.Rule(body, lr_scale=warmup(scale, steps))])
    ref_body, ref_head = keras.Variable(init[0], name="rb"), keras.Variable(init[1], name="rh")
    ref_body_opt = make(LinearWarmup(lr * scale, warmup_steps=steps))
    ref_head_opt = make(lr)
    for g_body, g_head in grads:
        opt.apply([g_body, g_head], [body, head])
        ref_body_opt.apply([g_body], [ref_body])
        ref_head_opt.apply([g_head], [ref_head])
    np.testing.assert_allclose(_value(body), _value(ref_body), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(_value(head), _value(ref_head), rtol=1e-6, atol=1e-7)
    assert not np.array_equal(_value(body), init[0])


def test_effective_learning_rate_per_step_in_fit(jit_compile):
    model = helpers.mlp()
    x, y = helpers.data(n=16)
    schedule = warmup(0.5, 4)
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.SGD(0.1), [lw.Rule(model.get_layer("l0"), lr_scale=schedule, name="l0")]
    )
    model.compile(opt, "mse", jit_compile=jit_compile)
    before = helpers.weights(model)
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    after = helpers.weights(model)
    # Step 0 runs at scale 0: l0 did not move, the other layers did.
    assert [np.array_equal(a, b) for a, b in zip(after, before)] == [True, True] + [False] * 4
    for step in range(1, 7):
        rows = {r["path"]: r for r in opt.summary_rows()}
        assert rows["l0/kernel"]["effective_lr"] == pytest.approx(0.1 * schedule.value_at(step), rel=1e-6)
        assert rows["l1/kernel"]["effective_lr"] == pytest.approx(0.1, rel=1e-6)
        model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
