"""Runtime unfreezing (`set_frozen`) and the `GradualUnfreezing` callback.

The reference for an unfrozen variable is a fresh inner optimizer created at
the step it unfreezes, fed the same gradients: zero slots, its own step count.
"""

import os

import keras
import numpy as np
import pytest

import layerwise as lw
from tests import helpers

OPTIMIZERS = {
    "momentum": lambda lr: keras.optimizers.SGD(lr, momentum=0.9),
    "adam": lambda lr: keras.optimizers.Adam(lr),
    "adamw": lambda lr: keras.optimizers.AdamW(lr, weight_decay=0.1),
    "nadam": lambda lr: keras.optimizers.Nadam(lr),
}


def _grad(w, target):
    return keras.ops.convert_to_tensor((w - target).astype("float32"))


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_unfrozen_variables_start_like_a_fresh_optimizer(name):
    """Frozen for 3 steps, then 4 steps equal to a fresh optimizer at lr*s;
    the always-trainable variable equals one optimizer over all 7 steps."""
    make, lr, scale = OPTIMIZERS[name], 0.05, 0.5
    rng = np.random.default_rng(0)
    w0 = [rng.normal(size=s).astype("float32") for s in [(3, 2), (2,)]]
    targets = [rng.normal(size=w.shape).astype("float32") for w in w0]
    body, head = (keras.Variable(w, name=n) for w, n in zip(w0, ["body", "head"]))
    opt = lw.LayerwiseOptimizer(
        make(lr), rules=[lw.Rule(body, lr_scale=scale, frozen=True, name="body")]
    )
    opt.build([body, head])
    ref_body, ref_head = (keras.Variable(w) for w in w0)
    ref_head_opt = make(lr)
    ref_head_opt.build([ref_head])
    ref_body_opt = make(lr * scale)
    ref_body_opt.build([ref_body])
    for step in range(7):
        if step == 3:
            opt.set_frozen("body", False)
        grads = [_grad(keras.ops.convert_to_numpy(v), t) for v, t in zip([body, head], targets)]
        opt.apply(grads, [body, head])
        ref_head_opt.apply([grads[1]], [ref_head])
        if step >= 3:
            ref_body_opt.apply([grads[0]], [ref_body])
        else:
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(body), w0[0])
    helpers.assert_weights_close([body, head], [ref_body, ref_head], rtol=1e-5)
    assert int(opt.iterations) == 7
    unfrozen_opt = opt.all_optimizers()[1]
    assert int(unfrozen_opt.iterations) == 4
    # Slots were created for the unfrozen variable only when it unfroze.
    assert [len(o.variables) for o in opt.all_optimizers()] == [
        len(ref_head_opt.variables), len(ref_body_opt.variables)
    ]


def test_set_frozen_validates_and_changes_nothing_on_error():
    model = helpers.mlp()
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.Adam(), rules=[lw.Rule(model.get_layer("l0"), frozen=True, name="l0")]
    )
    opt.build(model.trainable_variables)
    n_vars = len(opt.variables)
    with pytest.raises(TypeError, match="`frozen` must be True or False"):
        opt.set_frozen("l0", "no")
    with pytest.raises(ValueError, match="must be the name of one of"):
        opt.set_frozen("nope", False)
    assert opt.get_rule("l0").frozen is True
    assert len(opt.variables) == n_vars
    assert sum(p.frozen for p in opt.plan.variables) == 2  # l0 kernel, bias


def test_each_unfreeze_starts_fresh_and_summary_shows_the_optimizer():
    model = helpers.mlp()
    x, y = helpers.data()
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.Adam(0.01), rules=[lw.Rule(model.get_layer("l1"), frozen=True, name="l1")]
    )
    model.compile(optimizer=opt, loss="mse")
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    n_vars = len(opt.variables)
    opt.set_frozen("l1", False)
    first = opt.all_optimizers()[1]
    assert len(opt.all_optimizers()) == 2
    opt.set_frozen("l1", True)  # its runtime optimizer is dropped, slots and all
    assert len(opt.all_optimizers()) == 1 and len(opt.variables) == n_vars
    opt.set_frozen("l1", False)  # fresh state again: a new Adam
    assert len(opt.all_optimizers()) == 2 and opt.all_optimizers()[1] is not first
    # Per unfreeze: iterations, learning_rate, and m, v for kernel and bias.
    assert len(opt.variables) == n_vars + (2 + 2 * 2)
    lines = []
    opt.summary(print_fn=lines.append)
    assert "Slots in" in lines[0].splitlines()[3]
    rows = {r["path"]: r for r in opt.summary_rows()}
    assert rows["l1/kernel"]["optimizer"].endswith("_unfrozen_1")
    assert rows["l0/kernel"]["optimizer"] == opt.inner_optimizer.name


def _fit_with_schedule(jit_compile, epochs, model=None, initial_epoch=0, **kwargs):
    x, y = helpers.data(n=64)
    if model is None:
        model = helpers.mlp()
        opt = lw.LayerwiseOptimizer(
            keras.optimizers.Adam(0.01), rules=lw.layer_decay(model, decay=0.5), **kwargs
        )
        model.compile(optimizer=opt, loss="mse", jit_compile=jit_compile)
    snapshots = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: snapshots.append(helpers.weights(model))
    )
    unfreeze = lw.callbacks.GradualUnfreezing({0: "l2", 1: "l1", 2: "l0"})
    model.fit(
        x, y, epochs=epochs, initial_epoch=initial_epoch, batch_size=16,
        shuffle=False, verbose=0, callbacks=[unfreeze, record],
    )
    return model, snapshots


def test_gradual_unfreezing_in_fit(jit_compile):
    """Blocks move only from their epoch on; each unfrozen block has its own
    step count."""
    model, snaps = _fit_with_schedule(jit_compile, epochs=3)
    initial = helpers.mlp()  # same seed: the initial weights
    w0 = helpers.weights(initial)
    # Variables: l0 kernel/bias, l1 kernel/bias, l2 kernel/bias.
    def moved(snapshot, i):
        return not np.array_equal(snapshot[i], w0[i])
    assert [moved(snaps[0], i) for i in range(6)] == [False, False, False, False, True, True]
    assert [moved(snaps[1], i) for i in range(6)] == [False, False, True, True, True, True]
    assert all(moved(snaps[2], i) for i in range(6))
    opt = model.optimizer
    counts = [int(keras.ops.convert_to_numpy(o.iterations)) for o in opt.all_optimizers()]
    # Epoch 0 freezes l0 and l1 (built trainable: the inner optimizer keeps
    # their slots); they unfreeze into fresh optimizers at epochs 1 and 2.
    assert counts == [12, 8, 4]


def test_gradual_unfreezing_resumes_exactly_from_a_saved_model(tmp_path, jit_compile):
    """2 epochs -> save -> load -> epoch 3 equals 3 epochs uninterrupted,
    with accumulation (3 micro-batches per step: cycles cross epochs) and EMA."""
    options = dict(accumulate_steps=3, ema=0.5)
    full, _ = _fit_with_schedule(jit_compile, epochs=3, **options)
    keras.backend.clear_session()
    half, _ = _fit_with_schedule(jit_compile, epochs=2, **options)
    path = os.path.join(tmp_path, "m.keras")
    half.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.optimizer.get_config()["unfrozen_at_runtime"] == [
        {"source": 0, "paths": ["l1/kernel", "l1/bias"]}
    ]
    loaded.compile(optimizer=loaded.optimizer, loss="mse", jit_compile=jit_compile)
    resumed, _ = _fit_with_schedule(jit_compile, epochs=3, model=loaded, initial_epoch=2)
    helpers.assert_weights_close(helpers.weights(resumed), helpers.weights(full), rtol=1e-6)
    for (_, a), (_, b) in zip(resumed.optimizer.ema_pairs(), full.optimizer.ema_pairs()):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), rtol=1e-6)


def test_gradual_unfreezing_errors():
    with pytest.raises(ValueError, match="non-empty dict"):
        lw.callbacks.GradualUnfreezing([])
    with pytest.raises(ValueError, match="ints >= 0"):
        lw.callbacks.GradualUnfreezing({-1: "a"})
    with pytest.raises(ValueError, match="each rule once"):
        lw.callbacks.GradualUnfreezing({0: "a", 1: ["a"]})
    model = helpers.mlp()
    x, y = helpers.data(n=8)
    model.compile(optimizer="adam", loss="mse")
    with pytest.raises(ValueError, match="compiled with a `layerwise.LayerwiseOptimizer`"):
        model.fit(x, y, verbose=0, callbacks=[lw.callbacks.GradualUnfreezing({0: "l0"})])
    model = helpers.mlp()
    model.compile(optimizer=lw.LayerwiseOptimizer(keras.optimizers.Adam()), loss="mse")
    before = helpers.weights(model)
    with pytest.raises(ValueError, match="must be the name of one of"):
        model.fit(x, y, verbose=0, callbacks=[lw.callbacks.GradualUnfreezing({0: "l0"})])
    helpers.assert_weights_close(helpers.weights(model), before, rtol=0, atol=0)


def test_frozen_variables_are_untrainable_until_unfrozen():
    """`skip_frozen_gradients` (default): Keras computes no gradient for
    frozen variables; unfreezing marks them trainable again."""
    model = helpers.mlp()
    x, y = helpers.data()
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.Adam(0.01), rules=[lw.Rule(model.get_layer("l0"), frozen=True, name="l0")]
    )
    model.compile(optimizer=opt, loss="mse")
    model.fit(x, y, epochs=1, verbose=0)
    assert [v.path for v in model.trainable_variables] == ["l1/kernel", "l1/bias", "l2/kernel", "l2/bias"]
    opt.set_frozen("l0", False)
    assert len(model.trainable_variables) == 6
    model.make_train_function(force=True)
    before = helpers.weights(model)[0]
    model.fit(x, y, epochs=1, verbose=0)
    assert not np.array_equal(helpers.weights(model)[0], before)
    kept = helpers.mlp(seed=1, name="kept")
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.Adam(), [lw.Rule(kept.get_layer("l0"), frozen=True)], skip_frozen_gradients=False
    )
    opt.build(kept.trainable_variables)
    assert len(kept.trainable_variables) == 6


# SplitAccumulation: the reference is the same training with the run-time
# conditional (no callback); micro-steps and real steps must interleave over
# epoch boundaries (5 batches per epoch, k=3) and across separate `fit` calls.

def _accumulating(jit_compile, **kwargs):
    model = helpers.mlp()
    rules = [
        lw.Rule(model.get_layer("l0"), lr_scale=0.5, name="body"),
        lw.Rule(model.get_layer("l1"), gradient=lw.clip_by_global_norm(0.05), name="clipped"),
        lw.Rule("l2/bias", frozen=True, name="frozen"),
    ]
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.AdamW(0.01, weight_decay=0.1), rules, accumulate_steps=3, ema=0.9,
        **kwargs,
    )
    model.compile(optimizer=opt, loss="mse", jit_compile=jit_compile)
    return model, opt


def _fit(model, epochs, callbacks=(), initial_epoch=0):
    x, y = helpers.data(n=40)
    model.fit(x, y, batch_size=8, epochs=epochs, initial_epoch=initial_epoch,
              shuffle=False, verbose=0, callbacks=list(callbacks))


def _state(model, opt):
    return helpers.weights(model) + [np.array(keras.ops.convert_to_numpy(v)) for v in opt.variables]


def test_split_accumulation_equals_the_conditional_step(jit_compile):
    reference, ref_opt = _accumulating(jit_compile)
    _fit(reference, epochs=3)
    model, opt = _accumulating(jit_compile)
    split = lw.callbacks.SplitAccumulation()
    _fit(model, epochs=1, callbacks=[split])
    _fit(model, epochs=3, callbacks=[split], initial_epoch=1)
    helpers.assert_weights_close(_state(model, opt), _state(reference, ref_opt), rtol=1e-6, atol=1e-7)
    assert int(opt.iterations) == int(ref_opt.iterations) == 5  # 15 batches, k=3
    assert opt.accumulation.micro_steps_taken() == 0


def test_split_accumulation_builds_no_conditional_and_traces_once(monkeypatch, jit_compile):
    from layerwise._internals import optimizers as internals

    conditionals = []
    run_one_branch = internals.run_one_branch
    monkeypatch.setattr(
        internals, "run_one_branch", lambda *a, **k: conditionals.append(1) or run_one_branch(*a, **k)
    )
    real_traces = []

    def hook(grads, variables):
        real_traces.append(1)  # runs in real steps only: once per trace when compiled
        return grads

    model, opt = _accumulating(jit_compile, gradient_hook=hook)
    split = lw.callbacks.SplitAccumulation()
    _fit(model, epochs=2, callbacks=[split])
    first = len(real_traces)
    _fit(model, epochs=1, callbacks=[split])
    assert conditionals == []
    assert int(opt.iterations) == 5
    if jit_compile or keras.backend.backend() == "tensorflow":
        # A later fit reuses both compiled functions.
        assert len(real_traces) == first
    # Without the callback the same model builds its conditional again.
    _fit(model, epochs=1)
    assert conditionals


def test_split_accumulation_gives_back_the_train_function_and_resumes(tmp_path, jit_compile):
    """After fit the model's own train function is back (a fit without the
    callback continues the same cycle); a model saved mid-cycle continues
    exactly when loaded and trained with the callback."""
    reference, ref_opt = _accumulating(jit_compile)
    _fit(reference, epochs=4)
    model, opt = _accumulating(jit_compile)
    original = model.make_train_function() or model.train_function
    _fit(model, epochs=1, callbacks=[lw.callbacks.SplitAccumulation()])
    assert model.train_function is original
    _fit(model, epochs=2, initial_epoch=1)  # 10 batches: mid-cycle (micro_step 1)
    assert opt.accumulation.micro_steps_taken() == 1
    path = os.path.join(tmp_path, "mid_cycle.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    _fit(loaded, epochs=4, callbacks=[lw.callbacks.SplitAccumulation()], initial_epoch=2)
    helpers.assert_weights_close(
        _state(loaded, loaded.optimizer), _state(reference, ref_opt), rtol=1e-6, atol=1e-7
    )


class _StopAtBatch(keras.callbacks.Callback):
    def on_train_batch_begin(self, batch, logs=None):
        if batch == 2:
            raise RuntimeError("stopped")


def test_split_accumulation_after_a_fit_that_stopped_on_an_error(jit_compile):
    """Keras skips `on_train_end` when `fit` raises, so the phase function
    stays installed: called without the callback counting, it defers to the
    model's own (conditional) function; the next `fit` with the callback
    counts again from the optimizer."""
    results = []
    for split in ([], [lw.callbacks.SplitAccumulation()]):
        model, opt = _accumulating(jit_compile)
        with pytest.raises(RuntimeError, match="stopped"):
            _fit(model, epochs=1, callbacks=split + [_StopAtBatch()])
        _fit(model, epochs=1)
        _fit(model, epochs=2, callbacks=split)
        results.append(_state(model, opt))
    helpers.assert_weights_close(results[1], results[0], rtol=1e-6, atol=1e-7)


def test_split_accumulation_with_gradual_unfreezing(jit_compile):
    """GradualUnfreezing re-makes the train function: the phase functions
    are made again from it, and the result is the conditional one's."""
    results = []
    for callbacks in ([], [lw.callbacks.SplitAccumulation()]):
        model, opt = _accumulating(jit_compile)
        unfreeze = lw.callbacks.GradualUnfreezing({0: "clipped", 1: "body"})
        _fit(model, epochs=3, callbacks=[unfreeze] + callbacks)
        results.append(_state(model, opt))
    helpers.assert_weights_close(results[1], results[0], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "kwargs, compile_kwargs, message",
    [
        ({"accumulate_steps": None}, {}, "accumulate_steps"),
        ({"skip_nonfinite": True}, {}, "skip_nonfinite"),
        ({}, {"steps_per_execution": 2}, "steps_per_execution"),
    ],
)
def test_split_accumulation_errors(kwargs, compile_kwargs, message):
    if compile_kwargs and keras.backend.backend() == "torch":
        pytest.skip("Keras' torch trainer refuses steps_per_execution > 1 itself")
    model = helpers.mlp()
    options = {"accumulate_steps": 3, **kwargs}
    opt = lw.LayerwiseOptimizer(keras.optimizers.Adam(0.01), **options)
    model.compile(optimizer=opt, loss="mse", **compile_kwargs)
    before = helpers.weights(model)
    with pytest.raises(ValueError, match=message):
        _fit(model, epochs=1, callbacks=[lw.callbacks.SplitAccumulation()])
    helpers.assert_weights_close(helpers.weights(model), before, rtol=0, atol=0)


def test_split_accumulation_needs_a_layerwise_optimizer():
    model = helpers.mlp()
    model.compile(optimizer=keras.optimizers.Adam(0.01, gradient_accumulation_steps=2), loss="mse")
    with pytest.raises(ValueError, match="LayerwiseOptimizer"):
        _fit(model, epochs=1, callbacks=[lw.callbacks.SplitAccumulation()])
