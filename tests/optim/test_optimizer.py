"""LayerwiseOptimizer behaviour: freezing, runtime scales, schedules,
callbacks, loss scaling, gradient processing order and serialization."""

import os

import keras
import numpy as np
import pytest

import layerwise as lw
from tests import helpers
from tests.conftest import BACKEND


def _fit(model, opt, epochs=2, jit_compile=False, callbacks=None):
    x, y = helpers.data()
    model.compile(opt, "mse", jit_compile=jit_compile)
    return model.fit(
        x, y, batch_size=16, epochs=epochs, shuffle=False, verbose=0,
        callbacks=callbacks,
    )


def _value(v):
    return np.array(keras.ops.convert_to_numpy(v))


def test_frozen_variables_do_not_move_and_have_no_slots(jit_compile):
    model = helpers.mlp()
    before = {v.path: _value(v) for v in model.trainable_variables}
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.Adam(0.01), [lw.Rule(model.get_layer("l0"), frozen=True)]
    )
    _fit(model, opt, jit_compile=jit_compile)
    for v in model.trainable_variables:
        moved = not np.array_equal(_value(v), before[v.path])
        assert moved == (not v.path.startswith("l0/")), v.path
    slot_names = [v.path for v in opt.inner_optimizer.variables]
    assert not any("l0_" in p for p in slot_names), slot_names
    # Adam: iteration + learning rate + 2 slots per non-frozen variable.
    assert len(opt.inner_optimizer.variables) == 2 + 2 * 4


def test_later_rule_unfreezes(jit_compile):
    model = helpers.mlp()
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.SGD(0.1),
        [lw.Rule(".*", frozen=True), lw.Rule("l2/.*", frozen=False)],
    )
    before = helpers.weights(model)
    _fit(model, opt, epochs=1, jit_compile=jit_compile)
    after = helpers.weights(model)
    moved = [not np.array_equal(a, b) for a, b in zip(after, before)]
    assert moved == [False, False, False, False, True, True]


def test_scales_multiply_and_last_weight_decay_wins():
    model = helpers.mlp()
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.AdamW(0.01, weight_decay=0.1),
        [
            lw.Rule("l0/.*", lr_scale=0.5, weight_decay=0.0),
            lw.Rule("l0/kernel", lr_scale=0.2, weight_decay=0.3),
        ],
    )
    opt.build(model.trainable_variables)
    rows = {r["path"]: r for r in opt.summary_rows()}
    assert rows["l0/kernel"]["lr_scale"] == pytest.approx(0.1)
    assert rows["l0/kernel"]["weight_decay"] == 0.3
    assert rows["l0/bias"]["lr_scale"] == 0.5
    assert rows["l0/bias"]["weight_decay"] is None
    assert rows["l1/kernel"]["weight_decay"] == pytest.approx(0.1)
    assert rows["l1/kernel"]["effective_lr"] == pytest.approx(0.01)


def test_set_lr_scale_takes_effect_without_retracing(jit_compile):
    traces = []

    def hook(grads, variables):
        traces.append(1)  # Runs once per trace (or per step when eager).
        return grads

    model = helpers.mlp()
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.Adam(0.01),
        [lw.Rule("l0/.*", lr_scale=1.0, name="body")],
        gradient_hook=hook,
    )
    x, y = helpers.data()
    model.compile(opt, "mse", jit_compile=jit_compile)
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    traces_after_first_fit = len(traces)
    opt.set_lr_scale("body", 0.0)
    before = helpers.weights(model)
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    after = helpers.weights(model)
    # lr 0 for l0: exactly unchanged; the others keep learning.
    np.testing.assert_array_equal(after[0], before[0])
    np.testing.assert_array_equal(after[1], before[1])
    assert not np.array_equal(after[4], before[4])
    compiled = jit_compile or BACKEND == "tensorflow"
    if compiled:
        assert len(traces) == traces_after_first_fit
    assert opt.get_rule("body").lr_scale == 0.0


def test_rule_attribute_sets_scale():
    model = helpers.mlp()
    opt = lw.LayerwiseOptimizer(keras.optimizers.SGD(0.1), [lw.Rule("l0/.*", lr_scale=1.0)])
    opt.build(model.trainable_variables)
    opt.rules[0].lr_scale = 0.25
    assert _value(opt.variables[0]).tolist() == [0.25]  # the `lr_scales` vector


def test_scale_schedule_is_evaluated_each_step(jit_compile):
    model = helpers.mlp()
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay([2], [0.0, 1.0])
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.SGD(0.1), [lw.Rule("l0/.*", lr_scale=schedule)]
    )
    before = helpers.weights(model)
    x, y = helpers.data(n=48)
    model.compile(opt, "mse", jit_compile=jit_compile)
    model.fit(x[:32], y[:32], batch_size=16, epochs=1, shuffle=False, verbose=0)
    # Steps 0 and 1 (iterations <= 2 -> scale 0): l0 unchanged.
    np.testing.assert_array_equal(helpers.weights(model)[0], before[0])
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    assert not np.array_equal(helpers.weights(model)[0], before[0])


def test_callable_scale_receives_the_step():
    seen = []

    def warmup(step):
        seen.append(step)
        return keras.ops.minimum(keras.ops.cast(step, "float32") / 10.0, 1.0)

    variable = keras.Variable(np.ones(3, "float32"), name="w")
    opt = lw.LayerwiseOptimizer(keras.optimizers.SGD(1.0), [lw.Rule(variable, lr_scale=warmup)])
    grads = [keras.ops.ones(3)]
    opt.apply(grads, [variable])  # step 0 -> scale 0
    np.testing.assert_allclose(_value(variable), 1.0)
    opt.apply(grads, [variable])  # step 1 -> scale 0.1
    np.testing.assert_allclose(_value(variable), 0.9, rtol=1e-6)


def test_learning_rate_scheduler_keeps_ratios():
    model = helpers.mlp()
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.SGD(0.1), [lw.Rule("l0/.*", lr_scale=0.1)]
    )
    scheduler = keras.callbacks.LearningRateScheduler(lambda epoch: 0.1 * 0.5**epoch)
    _fit(model, opt, epochs=3, callbacks=[scheduler])
    assert float(_value(opt.learning_rate)) == pytest.approx(0.025)
    rows = {r["path"]: r for r in opt.summary_rows()}
    assert rows["l0/kernel"]["effective_lr"] == pytest.approx(0.0025)
    assert rows["l1/kernel"]["effective_lr"] == pytest.approx(0.025)


def test_reduce_lr_on_plateau_works():
    model = helpers.mlp()
    opt = lw.LayerwiseOptimizer(keras.optimizers.Adam(0.01), [lw.Rule("l0/.*", lr_scale=0.1)])
    reduce = keras.callbacks.ReduceLROnPlateau(
        monitor="loss", factor=0.5, patience=0, min_delta=1e9, verbose=0
    )
    _fit(model, opt, epochs=3, callbacks=[reduce])
    # The first epoch sets the baseline; the next two each halve the rate.
    assert float(_value(opt.learning_rate)) == pytest.approx(0.01 * 0.5**2)


def test_loss_scale_optimizer_wrapping_nadam(jit_compile):
    def make():
        return lw.LayerwiseOptimizer(
            keras.optimizers.Nadam(0.01), [lw.Rule("l0/.*", lr_scale=0.3)]
        )

    model = helpers.mlp()
    opt = keras.optimizers.LossScaleOptimizer(make())
    _fit(model, opt, jit_compile=jit_compile)
    reference = helpers.mlp()
    _fit(reference, make(), jit_compile=jit_compile)
    helpers.assert_weights_close(helpers.weights(model), helpers.weights(reference))
    # Nadam's per-step state is tracked, so JAX threads it through the step.
    inner = opt.inner_optimizer.inner_optimizer
    u_product = float(_value(inner._u_product))
    assert u_product < 0.9 ** 8


def test_gradient_order_hook_then_rules_then_clipnorm():
    variable = keras.Variable(np.zeros(2, "float32"), name="w")
    calls = []

    def hook(grads, variables):
        calls.append(("hook", _value(grads[0]).tolist()))
        return [g * 2.0 for g in grads]

    def record(grad, variable):
        calls.append(("rule", _value(grad).tolist()))
        return grad

    opt = lw.LayerwiseOptimizer(
        keras.optimizers.SGD(1.0, global_clipnorm=1.0),
        [lw.Rule(variable, gradient=[lw.scale(10.0), record])],
        gradient_hook=hook,
    )
    opt.apply([keras.ops.convert_to_tensor([3.0, 4.0])], [variable])
    assert calls == [("hook", [3.0, 4.0]), ("rule", [60.0, 80.0])]
    # clipnorm acts last, on the transformed gradient: norm 100 -> 1.
    np.testing.assert_allclose(_value(variable), [-0.6, -0.8], rtol=1e-6)


def test_rule_transforms_chain_in_rule_order():
    variable = keras.Variable(np.zeros(2, "float32"), name="w")
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.SGD(1.0),
        [
            lw.Rule(variable, gradient=lw.clip_by_value(1.0)),
            lw.Rule(".*", gradient=lw.scale(3.0)),
        ],
    )
    opt.apply([keras.ops.convert_to_tensor([5.0, -0.5])], [variable])
    # clip first (to [1, -0.5]), then scale by 3.
    np.testing.assert_allclose(_value(variable), [-3.0, 1.5])


def test_global_clipnorm_spans_all_groups():
    a = keras.Variable(np.zeros(1, "float32"), name="a")
    b = keras.Variable(np.zeros(1, "float32"), name="b")
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.SGD(1.0, global_clipnorm=1.0), [lw.Rule(a, lr_scale=0.5)]
    )
    opt.apply([keras.ops.convert_to_tensor([3.0]), keras.ops.convert_to_tensor([4.0])], [a, b])
    np.testing.assert_allclose(_value(a), [-0.3], rtol=1e-6)
    np.testing.assert_allclose(_value(b), [-0.8], rtol=1e-6)


def test_save_load_continue_matches_uninterrupted(tmp_path):
    x, y = helpers.data()

    def make_opt():
        return lw.LayerwiseOptimizer(
            keras.optimizers.AdamW(0.01, weight_decay=0.05),
            [
                lw.Rule("l0/.*", lr_scale=0.1, name="body", gradient=[lw.clip_by_norm(0.5)]),
                lw.Rule(".*/bias", weight_decay=0.0, name="no_decay"),
            ],
        )

    model = helpers.mlp()
    model.compile(make_opt(), "mse")
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    model.optimizer.set_lr_scale("body", 0.3)
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.optimizer, lw.LayerwiseOptimizer)
    assert loaded.optimizer.get_rule("body").lr_scale == pytest.approx(0.3)
    for a, b in zip(loaded.optimizer.variables, model.optimizer.variables):
        np.testing.assert_array_equal(_value(a), _value(b))
    loaded.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    helpers.assert_weights_close(helpers.weights(loaded), helpers.weights(model), rtol=1e-6, atol=1e-7)
    assert int(_value(loaded.optimizer.iterations)) == 8


def test_lambda_rule_is_refused_at_load_in_safe_mode(tmp_path):
    model = helpers.mlp()
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.SGD(0.1), [lw.Rule(lambda v: "l0" in v.path, lr_scale=0.5)]
    )
    _fit(model, opt, epochs=1)
    path = os.path.join(tmp_path, "model.keras")
    with pytest.warns(UserWarning, match="lambda"):
        model.save(path)
    with pytest.raises(ValueError, match="lambda"):
        keras.models.load_model(path)
    loaded = keras.models.load_model(path, safe_mode=False)
    assert loaded.optimizer.rules[0].lr_scale == 0.5


def test_config_round_trip():
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.Adam(0.002),
        [lw.Rule("a/.*", lr_scale=0.5, weight_decay=0.0, gradient=[lw.chain(lw.clip_by_norm(1.0), lw.zero())], name="a")],
        strict=False,
    )
    restored = lw.LayerwiseOptimizer.from_config(opt.get_config())
    assert restored.get_config() == opt.get_config()
    assert restored.strict is False
    assert float(_value(restored.learning_rate)) == pytest.approx(0.002)


def test_unregistered_function_rule_fails_at_load_with_keras_hint(tmp_path):
    def make_predicate():
        def is_l0(variable):
            return variable.path.startswith("l0/")

        return is_l0

    model = helpers.mlp()
    opt = lw.LayerwiseOptimizer(keras.optimizers.SGD(0.1), [lw.Rule(make_predicate(), lr_scale=0.5)])
    _fit(model, opt, epochs=1)
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    with pytest.raises(TypeError, match="Could not locate function 'is_l0'.*register_keras_serializable"):
        keras.models.load_model(path)


@keras.saving.register_keras_serializable(package="layerwise_tests")
def _is_head(variable):
    return variable.path.startswith("l2/")


@keras.saving.register_keras_serializable(package="layerwise_tests")
def _halve(gradient, variable):
    return gradient * 0.5


def test_registered_functions_round_trip_in_safe_mode(tmp_path):
    model = helpers.mlp()
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.SGD(0.1), [lw.Rule(_is_head, lr_scale=0.5, gradient=_halve, name="head")]
    )
    _fit(model, opt, epochs=1)
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    rule = loaded.optimizer.get_rule("head")
    assert rule.selector.fn is _is_head and rule.gradient[0].fn is _halve
    x, y = helpers.data()
    loaded.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    helpers.assert_weights_close(helpers.weights(loaded), helpers.weights(model), rtol=1e-6, atol=1e-7)


def test_rule_global_norm_equals_keras_global_clipnorm_with_sparse_gradients(jit_compile):
    # Embedding gradients are IndexedSlices on TensorFlow.
    def model_fn():
        keras.utils.set_random_seed(3)
        tokens = keras.Input((5,), dtype="int32")
        x = keras.layers.Embedding(20, 4, name="emb")(tokens)
        x = keras.layers.GlobalAveragePooling1D()(x)
        return keras.Model(tokens, keras.layers.Dense(2, name="out")(x))

    rng = np.random.default_rng(0)
    x = rng.integers(0, 20, size=(32, 5)).astype("int32")
    y = rng.normal(size=(32, 2)).astype("float32")
    model = model_fn()
    model.compile(
        lw.LayerwiseOptimizer(keras.optimizers.SGD(0.5), [lw.Rule(".*", gradient=lw.clip_by_global_norm(0.05))]),
        "mse", jit_compile=jit_compile,
    )
    model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    reference = model_fn()
    reference.compile(keras.optimizers.SGD(0.5, global_clipnorm=0.05), "mse", jit_compile=jit_compile)
    reference.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    helpers.assert_weights_close(helpers.weights(model), helpers.weights(reference))


def test_apply_gradients_pairs_and_returns_the_step():
    a = keras.Variable(np.ones(2, "float32"), name="a")
    b = keras.Variable(np.ones(2, "float32"), name="b")
    opt = lw.LayerwiseOptimizer(keras.optimizers.SGD(0.5), [lw.Rule(a, lr_scale=0.2)])
    step = opt.apply_gradients([(keras.ops.ones(2), a), (keras.ops.ones(2), b)])
    assert int(_value(step)) == 1
    np.testing.assert_allclose(_value(a), 0.9)
    np.testing.assert_allclose(_value(b), 0.5)
