"""A group can have its own optimizer (`Rule(match, optimizer=...)`).

References: Keras' `MultiOptimizer` with the same mapping (one optimizer per
group), plain optimizers at `lr * s`, and hand computations.
"""

import keras
import numpy as np
import pytest

import layerwise as lw
from tests import helpers
from tests.conftest import BACKEND

# Compiled where the backend compiles by default: for the slower
# compositions, checked once (the MultiOptimizer equality runs both modes).
COMPILED = BACKEND != "torch"


def _model(seed=0):
    """Embedding -> Dense hidden matrices -> LayerNorm -> head."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((5,), dtype="int32")
    x = keras.layers.Embedding(16, 8, name="embed")(inputs)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(12, activation="tanh", name="hidden_a")(x)
    x = keras.layers.LayerNormalization(name="norm")(x)
    x = keras.layers.Dense(12, activation="tanh", name="hidden_b")(x)
    outputs = keras.layers.Dense(3, name="head")(x)
    return keras.Model(inputs, outputs)


def _data(n=80, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 16, size=(n, 5)).astype("int32")
    y = rng.normal(size=(n, 3)).astype("float32")
    return x, y


def _hidden(v):
    return v.path.startswith(("hidden_a/", "hidden_b/")) and len(v.shape) == 2


def _mixed_optimizers():
    """Adam default, Muon on hidden matrices, SGD-momentum head, Lion norm."""
    return {
        "default": keras.optimizers.Adam(0.01),
        "muon": keras.optimizers.Muon(0.02, weight_decay=0.1, adam_weight_decay=0.0),
        "head": keras.optimizers.SGD(0.05, momentum=0.9),
        "norm": keras.optimizers.Lion(0.001, weight_decay=0.05),
    }


def _group_of(v):
    if _hidden(v):
        return "muon"
    if v.path.startswith("head/"):
        return "head"
    if v.path.startswith("norm/"):
        return "norm"
    return "default"


def _fit(model, optimizer, jit_compile, epochs=4, **kwargs):
    x, y = _data()
    model.compile(optimizer=optimizer, loss="mse", jit_compile=jit_compile)
    return model.fit(x, y, batch_size=16, epochs=epochs, shuffle=False, verbose=0, **kwargs)


def _layerwise(opts, **kwargs):
    return lw.LayerwiseOptimizer(
        opts["default"],
        [
            lw.Rule(_hidden, optimizer=opts["muon"], name="muon"),
            lw.Rule("head/.*", optimizer=opts["head"], name="head"),
            lw.Rule("norm/.*", optimizer=opts["norm"], name="norm"),
        ],
        **kwargs,
    )


def _multi(opts):
    return keras.optimizers.MultiOptimizer(lambda v: opts[_group_of(v)])


def test_mixed_groups_equal_multi_optimizer(jit_compile):
    model = _model()
    opt = _layerwise(_mixed_optimizers())
    _fit(model, opt, jit_compile)  # 4 epochs x 5 batches = 20 steps
    reference = _model()
    _fit(reference, _multi(_mixed_optimizers()), jit_compile)
    assert int(opt.iterations) == 20
    assert [int(o.iterations) for o in opt.all_optimizers()] == [20, 20, 20, 20]
    helpers.assert_weights_close(helpers.weights(model), helpers.weights(reference), rtol=1e-5, atol=1e-6)
    assert not np.allclose(helpers.weights(model)[0], helpers.weights(_model())[0])


def test_loss_scale_optimizer_outside_equals_it_around_multi_optimizer():
    jit_compile = COMPILED
    """`LossScaleOptimizer(LayerwiseOptimizer(...))`: the outer optimizer
    unscales, every group optimizer sees the true gradient."""
    model = _model()
    opt = keras.optimizers.LossScaleOptimizer(_layerwise(_mixed_optimizers()), initial_scale=1024.0)
    _fit(model, opt, jit_compile, epochs=2)
    reference = _model()
    _fit(reference, keras.optimizers.LossScaleOptimizer(_multi(_mixed_optimizers()), initial_scale=1024.0),
         jit_compile, epochs=2)
    helpers.assert_weights_close(helpers.weights(model), helpers.weights(reference), rtol=1e-5, atol=1e-6)


def test_multiplier_on_a_group_optimizer_scales_its_rate():
    jit_compile = COMPILED
    """`lr_scale` multiplies the group optimizer's own rate: equal to that
    optimizer built at `lr * s` (Muon's AdamW path and decay included)."""
    opts = _mixed_optimizers()
    model = _model()
    opt = lw.LayerwiseOptimizer(
        opts["default"],
        [lw.Rule(_hidden, optimizer=opts["muon"], name="muon"),
         lw.Rule("hidden_a/.*", lr_scale=0.5, name="half")],
    )
    _fit(model, opt, jit_compile)

    def select(v, table={
        "a": keras.optimizers.Muon(0.01, weight_decay=0.1, adam_weight_decay=0.0),
        "a_bias": keras.optimizers.Adam(0.005),
        "b": keras.optimizers.Muon(0.02, weight_decay=0.1, adam_weight_decay=0.0),
        "rest": keras.optimizers.Adam(0.01),
    }):
        if _hidden(v):
            return table["a" if v.path.startswith("hidden_a") else "b"]
        return table["a_bias" if v.path.startswith("hidden_a") else "rest"]

    reference = _model()
    _fit(reference, keras.optimizers.MultiOptimizer(select), jit_compile)
    helpers.assert_weights_close(helpers.weights(model), helpers.weights(reference), rtol=1e-5, atol=1e-6)


def test_rules_sharing_an_optimizer_share_its_slots_and_steps():
    sgd = keras.optimizers.SGD(0.1, momentum=0.9)
    model = _model()
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.Adam(0.01),
        [lw.Rule("head/.*", optimizer=sgd, name="head"),
         lw.Rule("norm/.*", optimizer=sgd, lr_scale=0.5, name="norm")],
    )
    opt.build(model.trainable_variables)
    assert len(opt.all_optimizers()) == 2
    assert opt.optimizer_of(model.get_layer("norm").gamma) is sgd
    # SGD with momentum: one slot per variable it updates, plus its two scalars.
    assert len(sgd.variables) == 2 + 4


def test_frozen_variables_of_a_group_get_no_slots():
    muon = keras.optimizers.Muon(0.02)
    model = _model()
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.Adam(0.01),
        [lw.Rule(_hidden, optimizer=muon, name="muon"),
         lw.Rule("hidden_b/.*", frozen=True, name="frozen")],
    )
    opt.build(model.trainable_variables)
    slot_paths = {v.path for v in muon.variables}
    assert any("hidden_a_kernel" in p for p in slot_paths)
    assert not any("hidden_b" in p for p in slot_paths)


def test_global_clipnorm_is_one_norm_over_every_group():
    """The wrapped optimizer's `global_clipnorm` sees all non-frozen
    gradients at once, group optimizers' variables included."""
    a = keras.Variable(np.zeros(2, "float32"), name="a")
    b = keras.Variable(np.zeros(2, "float32"), name="b")
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.SGD(1.0, global_clipnorm=1.0),
        [lw.Rule(b, optimizer=keras.optimizers.SGD(1.0), name="b")],
    )
    opt.apply([np.array([3.0, 0.0], "float32"), np.array([0.0, 4.0], "float32")], [a, b])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(a), [-0.6, 0.0], rtol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(b), [0.0, -0.8], rtol=1e-6)


def test_group_optimizer_clipping_acts_on_its_own_variables():
    """A rule optimizer's own `global_clipnorm` is a norm over the
    variables it updates, as for a `MultiOptimizer` sub-optimizer."""
    a = keras.Variable(np.zeros(2, "float32"), name="a")
    b = keras.Variable(np.zeros(2, "float32"), name="b")
    c = keras.Variable(np.zeros(2, "float32"), name="c")
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.SGD(1.0),
        [lw.Rule([b, c], optimizer=keras.optimizers.SGD(1.0, global_clipnorm=1.0), name="bc")],
    )
    grads = [np.array([3.0, 0.0], "float32"), np.array([0.0, 3.0], "float32"),
             np.array([4.0, 0.0], "float32")]
    opt.apply(grads, [a, b, c])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(a), [-3.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(b), [0.0, -0.6], rtol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(c), [-0.8, 0.0], rtol=1e-6)


def _dense_model(seed=0):
    """`_model` with a `Dense` in place of the `Embedding`: on TensorFlow an
    embedding's gradient is sparse, Keras' adaptive optimizers then update
    only the rows present, and a dense accumulated mean differs from one
    large batch (for Keras' own accumulation too)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((5,))
    x = keras.layers.Dense(12, name="embed")(inputs)
    x = keras.layers.Dense(12, activation="tanh", name="hidden_a")(x)
    x = keras.layers.LayerNormalization(name="norm")(x)
    x = keras.layers.Dense(12, activation="tanh", name="hidden_b")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(x))


def test_accumulation_with_group_optimizers_equals_one_large_batch():
    jit_compile = COMPILED
    x, y = _data(n=64)
    x = x.astype("float32")
    big = _dense_model()
    big_opt = _layerwise(_mixed_optimizers())
    big.compile(optimizer=big_opt, loss="mse", jit_compile=jit_compile)
    big.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0)
    small = _dense_model()
    small_opt = _layerwise(_mixed_optimizers(), accumulate_steps=4)
    small.compile(optimizer=small_opt, loss="mse", jit_compile=jit_compile)
    small.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    assert int(small_opt.iterations) == int(big_opt.iterations) == 4
    assert [int(o.iterations) for o in small_opt.all_optimizers()] == [4] * 4
    helpers.assert_weights_close(helpers.weights(small), helpers.weights(big), rtol=2e-5, atol=2e-6)


def test_ema_and_skipped_steps_cover_group_optimizers():
    a = keras.Variable(np.ones(2, "float32"), name="a")
    b = keras.Variable(np.ones(2, "float32"), name="b")
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.SGD(0.1),
        [lw.Rule(b, optimizer=keras.optimizers.SGD(1.0), name="b")],
        ema=0.5, skip_nonfinite=True,
    )
    g = np.ones(2, "float32")
    opt.apply([g, g], [a, b])
    opt.apply([g, np.array([np.nan, 1.0], "float32")], [a, b])  # skipped whole
    opt.apply([g, g], [a, b])
    assert int(opt.skipped_steps) == 1
    assert [int(o.iterations) for o in opt.all_optimizers()] == [2, 2]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(a), [0.8, 0.8], rtol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(b), [-1.0, -1.0], rtol=1e-6)
    averages = dict((v.path, keras.ops.convert_to_numpy(m)) for v, m in opt.ema_pairs())
    # Step 1 copies the weights; step 2: 0.5 * previous + 0.5 * current.
    np.testing.assert_allclose(averages["a"], [0.85, 0.85], rtol=1e-6)
    np.testing.assert_allclose(averages["b"], [-0.5, -0.5], rtol=1e-6)


def test_lr_diagnostic_reports_the_group_optimizer_rate():
    a = keras.Variable(np.ones(2, "float32"), name="a")
    b = keras.Variable(np.ones(2, "float32"), name="b")
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.SGD(0.1),
        [lw.Rule(a, lr_scale=0.5, name="a"),
         lw.Rule(b, optimizer=keras.optimizers.SGD(2.0), lr_scale=0.25, name="b")],
        log=("lr",),
    )
    opt.apply([np.ones(2, "float32")] * 2, [a, b])
    assert opt.diagnostics() == pytest.approx({"lr/a": 0.05, "lr/b": 0.5})


def test_unfreezing_a_group_gives_a_fresh_optimizer_of_its_class():
    """A Muon group frozen for 2 steps then unfrozen follows a fresh Muon
    (own zero slots, own step count) fed the same gradients."""
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(6, 4)).astype("float32")
    w = keras.Variable(w0, name="w")
    ref = keras.Variable(w0, name="ref")
    other = keras.Variable(np.ones(3, "float32"), name="other")
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.Adam(0.01),
        [lw.Rule(w, optimizer=keras.optimizers.Muon(0.05, weight_decay=0.1), frozen=True, name="w")],
    )
    fresh = keras.optimizers.Muon(0.05, weight_decay=0.1)
    grads = [rng.normal(size=(6, 4)).astype("float32") for _ in range(5)]
    for g in grads[:2]:
        opt.apply([g, np.ones(3, "float32")], [w, other])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(w), w0)
    opt.set_frozen("w", False)
    for g in grads[2:]:
        opt.apply([g, np.ones(3, "float32")], [w, other])
        fresh.apply([g], [ref])
    assert type(opt.optimizer_of(w)) is type(fresh)
    assert int(opt.optimizer_of(w).iterations) == 3
    np.testing.assert_allclose(keras.ops.convert_to_numpy(w), keras.ops.convert_to_numpy(ref), rtol=1e-5, atol=1e-6)


def test_save_load_continue_equals_uninterrupted(tmp_path):
    jit_compile = COMPILED

    def make():
        opts = _mixed_optimizers()
        shared = keras.optimizers.SGD(0.05, momentum=0.9)
        model = _model()
        opt = lw.LayerwiseOptimizer(
            opts["default"],
            [lw.Rule("hidden_(a|b)/kernel", optimizer=opts["muon"], name="muon"),
             lw.Rule("head/.*", optimizer=shared, name="head"),
             lw.Rule("norm/.*", optimizer=shared, lr_scale=0.5, name="norm"),
             lw.Rule("hidden_b/.*", lr_scale=0.3, name="b")],
            accumulate_steps=2, ema=0.9,
        )
        opt.exclude_from_weight_decay(var_names=["bias"])
        model.compile(optimizer=opt, loss="mse", jit_compile=jit_compile)
        return model

    x, y = _data(n=64)
    uninterrupted = make()
    uninterrupted.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    first = make()
    first.fit(x[:40], y[:40], batch_size=8, shuffle=False, verbose=0)  # mid-cycle
    path = str(tmp_path / "model.keras")
    first.save(path)
    loaded = keras.models.load_model(path)
    loaded.compile(optimizer=loaded.optimizer, loss="mse", jit_compile=jit_compile)
    opt = loaded.optimizer
    assert opt.get_rule("head").optimizer is opt.get_rule("norm").optimizer
    assert opt.accumulation.micro_steps_taken() == 1
    loaded.fit(x[40:], y[40:], batch_size=8, shuffle=False, verbose=0)
    loaded.fit(x, y, batch_size=8, shuffle=False, verbose=0)
    helpers.assert_weights_close(helpers.weights(loaded), helpers.weights(uninterrupted), rtol=1e-6, atol=1e-7)
    assert int(opt.iterations) == int(uninterrupted.optimizer.iterations) == 8
    row = {r["path"]: r for r in opt.summary_rows()}
    assert row["head/bias"]["weight_decay"] is None  # the exclusion survived the file


def test_summary_shows_the_update_rule_per_variable():
    muon = keras.optimizers.Muon(0.02, exclude_layers=["hidden_b"])
    model = _model()
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.AdamW(1e-3),
        [lw.Rule("hidden_.*", optimizer=muon, name="muon")],
    )
    opt.build(model.trainable_variables)
    rows = {r["path"]: r["update"] for r in opt.summary_rows()}
    assert rows["hidden_a/kernel"] == "Muon"
    assert rows["hidden_a/bias"] == "Muon (AdamW path)"  # 1-D
    assert rows["hidden_b/kernel"] == "Muon (AdamW path)"  # exclude_layers
    assert rows["head/kernel"] == "AdamW"
    lines = []
    opt.summary(print_fn=lines.append)
    assert "Muon (AdamW path)" in lines[0] and "rule optimizers: Muon" in lines[0]


@pytest.mark.parametrize("callback", ["reduce_on_plateau", "scheduler"])
def test_learning_rate_callbacks_keep_the_ratios(callback):
    """Keras' learning-rate callbacks set the wrapper's `learning_rate`:
    every group's rate moves by the same factor. The wrapper has no
    `optimizers` attribute, so they do not treat it as a MultiOptimizer."""
    opts = _mixed_optimizers()
    opt = _layerwise(opts)
    assert not hasattr(opt, "optimizers")
    if callback == "scheduler":
        cb = keras.callbacks.LearningRateScheduler(lambda epoch, lr: lr * 0.5)
    else:
        cb = keras.callbacks.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=0, min_delta=1e9)
    history = _fit(_model(), opt, False, epochs=3, callbacks=[cb])
    rates = [float(keras.ops.convert_to_numpy(o.learning_rate)) for o in opt.all_optimizers()]
    factor = rates[0] / 0.01
    assert factor in (pytest.approx(0.125), pytest.approx(0.25))
    np.testing.assert_allclose(rates, np.array([0.01, 0.02, 0.05, 0.001]) * factor, rtol=1e-6)
    assert "learning_rate" in history.history


def test_learning_rate_through_zero_restores_every_group():
    opt = _layerwise(_mixed_optimizers())
    opt.learning_rate = 0.0
    assert [float(o.learning_rate) for o in opt.all_optimizers()] == [0.0] * 4
    opt.learning_rate = 0.02
    np.testing.assert_allclose(
        [float(o.learning_rate) for o in opt.all_optimizers()], [0.02, 0.04, 0.1, 0.002], rtol=1e-6
    )


def test_learning_rate_cannot_move_a_scheduled_group():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.9)
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.Adam(0.01),
        [lw.Rule(".*", optimizer=keras.optimizers.SGD(schedule), name="all")],
    )
    with pytest.raises(TypeError, match="schedule"):
        opt.learning_rate = 0.5
    assert float(opt.learning_rate) == pytest.approx(0.01)  # nothing changed


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: keras.optimizers.SGD(0.1, gradient_accumulation_steps=2), "accumulate_steps"),
        (lambda: keras.optimizers.SGD(0.1, use_ema=True), "`ema`"),
        (lambda: keras.optimizers.SGD(0.1, loss_scale_factor=4.0), "loss_scale_factor"),
        (lambda: keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1)), "LossScaleOptimizer"),
        (lambda: "sgd", "keras.optimizers.Optimizer"),
    ],
)
def test_bad_group_optimizer_is_refused_at_the_rule(make, message):
    with pytest.raises((ValueError, TypeError), match=message):
        lw.Rule(".*", optimizer=make())


def test_a_group_optimizer_cannot_be_the_wrapped_one_or_owned_elsewhere():
    adam = keras.optimizers.Adam()
    with pytest.raises(ValueError, match="must not be given the inner optimizer"):
        lw.LayerwiseOptimizer(adam, [lw.Rule(".*", optimizer=adam)])
    sgd = keras.optimizers.SGD()
    first = lw.LayerwiseOptimizer(keras.optimizers.Adam(), [lw.Rule(".*", optimizer=sgd)])
    with pytest.raises(ValueError, match="already belongs"):
        lw.LayerwiseOptimizer(keras.optimizers.Adam(), [lw.Rule(".*", optimizer=sgd)])
    assert first.get_rule("rule_0").optimizer is sgd


@pytest.mark.skipif(BACKEND == "tensorflow", reason="TensorFlow has no stateless_apply")
def test_stateless_apply_threads_group_optimizer_state():
    model = _model()
    opt = _layerwise(_mixed_optimizers())
    opt.build(model.trainable_variables)
    grads = [keras.ops.ones(v.shape) for v in model.trainable_variables]
    train = [v.value for v in model.trainable_variables]
    state = [v.value for v in opt.variables]
    new_train, new_state = opt.stateless_apply(state, grads, train)
    assert len(new_state) == len(opt.variables)
    changed = [not np.array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
               for a, b in zip(state, new_state)]
    muon_iterations = [i for i, v in enumerate(opt.variables) if v is opt.all_optimizers()[1].iterations]
    assert changed[muon_iterations[0]]
