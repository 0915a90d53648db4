"""Gradient accumulation: k micro-batches of size b equal one batch of k*b.

Reference: the same model and rules trained without accumulation on the
large batch (mean-reduced loss, no batch statistics). Weights, slots and the
step count must match; `clip_by_global_norm` must see the accumulated
gradient (its threshold is set so that it clips).
"""

import os

import keras
import numpy as np
import pytest

import layerwise as lw
from tests import helpers

INNER = {
    "momentum": lambda **kw: keras.optimizers.SGD(0.05, momentum=0.9, **kw),
    "adam": lambda **kw: keras.optimizers.Adam(0.01, **kw),
    "adamw": lambda **kw: keras.optimizers.AdamW(0.01, weight_decay=0.1, **kw),
}


def _rules(model):
    return [
        lw.Rule(model.get_layer("l0"), lr_scale=0.5, name="body"),
        lw.Rule(model.get_layer("l1"), gradient=lw.clip_by_global_norm(0.05),
                weight_decay=0.0, name="clipped"),
        lw.Rule("l2/bias", frozen=True, name="frozen"),
    ]


def _train(name, k, batch_size, jit_compile, path="accumulate_steps", epochs=2):
    model = helpers.mlp()
    if k == 1:
        opt = lw.LayerwiseOptimizer(INNER[name](), _rules(model))
    elif path == "accumulate_steps":
        opt = lw.LayerwiseOptimizer(INNER[name](), _rules(model), accumulate_steps=k)
    else:
        opt = lw.LayerwiseOptimizer(
            INNER[name](gradient_accumulation_steps=k), _rules(model)
        )
    model.compile(optimizer=opt, loss="mse", jit_compile=jit_compile)
    x, y = helpers.data(n=64)
    model.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=False, verbose=0)
    return model, opt


def _slots(opt):
    return [keras.ops.convert_to_numpy(v) for v in opt.inner_optimizer.variables]


@pytest.mark.parametrize(
    "name, path",
    [("momentum", "accumulate_steps"), ("adam", "accumulate_steps"),
     ("adamw", "accumulate_steps"), ("adamw", "inner")],
)
def test_k_micro_batches_equal_one_large_batch(name, path, jit_compile):
    big, big_opt = _train(name, 1, 32, jit_compile)
    acc, acc_opt = _train(name, 4, 8, jit_compile, path=path)
    helpers.assert_weights_close(helpers.weights(acc), helpers.weights(big), rtol=2e-5, atol=1e-6)
    for a, b in zip(_slots(acc_opt), _slots(big_opt)):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)
    assert int(acc_opt.iterations) == int(big_opt.iterations) == 4
    assert acc_opt.accumulation.micro_steps_taken() == 0
    assert acc_opt.accumulate_steps == 4
    assert acc_opt.inner_optimizer.gradient_accumulation_steps is None


def test_the_clip_sees_the_accumulated_gradient():
    """Clipping each micro-gradient instead would give another result: the
    equivalence above is not vacuous."""
    big, _ = _train("momentum", 1, 32, False)
    model = helpers.mlp()
    opt = lw.LayerwiseOptimizer(INNER["momentum"](), _rules(model))
    model.compile(optimizer=opt, loss="mse")
    x, y = helpers.data(n=64)
    model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    l1_kernel = 2
    assert not np.allclose(helpers.weights(model)[l1_kernel], helpers.weights(big)[l1_kernel], rtol=1e-3)


def test_state_is_one_accumulator_per_trainable_variable():
    model, opt = _train("adam", 4, 8, False, epochs=1)
    accumulators = [v for v in opt.variables if v.path.endswith("_accumulator")]
    trainable = [v for v in model.trainable_variables if v.path != "l2/bias"]
    assert [tuple(a.shape) for a in accumulators] == [tuple(v.shape) for v in trainable]
    n_bytes = sum(int(np.prod(a.shape)) * 4 for a in accumulators)
    assert n_bytes == sum(int(np.prod(v.shape)) * 4 for v in trainable)


def test_micro_steps_change_no_weight_slot_or_count(jit_compile):
    model = helpers.mlp()
    opt = lw.LayerwiseOptimizer(keras.optimizers.Adam(0.01), accumulate_steps=4, ema=0.9)
    model.compile(optimizer=opt, loss="mse", jit_compile=jit_compile)
    x, y = helpers.data(n=24)
    before = helpers.weights(model)
    model.fit(x, y, batch_size=8, shuffle=False, verbose=0)  # 3 micro-steps
    helpers.assert_weights_close(helpers.weights(model), before, rtol=0, atol=0)
    assert int(opt.iterations) == 0
    assert opt.accumulation.micro_steps_taken() == 3
    for _, average in opt.ema_pairs():  # still the zeros of before step 1
        assert not np.any(keras.ops.convert_to_numpy(average))
    assert all(
        not np.any(keras.ops.convert_to_numpy(v))
        for v in opt.inner_optimizer.variables
        if "momentum" in v.path or "velocity" in v.path
    )


def test_resume_in_the_middle_of_a_cycle(tmp_path, jit_compile):
    """3 micro-steps -> save -> load -> 5 more equals 8 uninterrupted."""
    x, y = helpers.data(n=64)

    def fresh():
        model = helpers.mlp()
        opt = lw.LayerwiseOptimizer(keras.optimizers.Adam(0.01), _rules(model),
                                    accumulate_steps=4, ema=0.5)
        model.compile(optimizer=opt, loss="mse", jit_compile=jit_compile)
        return model

    full = fresh()
    full.fit(x, y, batch_size=8, shuffle=False, verbose=0)
    half = fresh()
    half.fit(x[:24], y[:24], batch_size=8, shuffle=False, verbose=0)
    path = os.path.join(tmp_path, "m.keras")
    half.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.optimizer.accumulation.micro_steps_taken() == 3
    loaded.fit(x[24:], y[24:], batch_size=8, shuffle=False, verbose=0)
    helpers.assert_weights_close(helpers.weights(loaded), helpers.weights(full), rtol=1e-6)
    for (_, a), (_, b) in zip(loaded.optimizer.ema_pairs(), full.optimizer.ema_pairs()):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), rtol=1e-6)


def test_keras_own_accumulation_moves_the_ema_on_micro_steps():
    """What Keras gets wrong: with `gradient_accumulation_steps` and
    `use_ema`, its averages move on every micro-batch, so the final (EMA)
    weights differ from the large batch's; ours equal them."""
    x, y = helpers.data(n=64)

    def run(optimizer, batch_size):
        model = helpers.mlp()
        model.compile(optimizer=optimizer, loss="mse")
        model.fit(x, y, batch_size=batch_size, epochs=2, shuffle=False, verbose=0)
        return helpers.weights(model)  # `fit` ends by writing the averages in

    reference = run(keras.optimizers.Adam(0.01, use_ema=True, ema_momentum=0.5), 32)
    keras_own = run(
        keras.optimizers.Adam(0.01, gradient_accumulation_steps=4, use_ema=True, ema_momentum=0.5), 8
    )
    ours = run(
        lw.LayerwiseOptimizer(
            keras.optimizers.Adam(0.01, gradient_accumulation_steps=4, use_ema=True, ema_momentum=0.5)
        ),
        8,
    )
    helpers.assert_weights_close(ours, reference, rtol=2e-5)
    assert max(np.abs(a - b).max() for a, b in zip(keras_own, reference)) > 1e-3


def test_accumulation_errors_change_nothing():
    inner = keras.optimizers.Adam(gradient_accumulation_steps=2, use_ema=True)
    with pytest.raises(ValueError, match="disagree"):
        lw.LayerwiseOptimizer(inner, accumulate_steps=3)
    with pytest.raises(ValueError, match="disagree"):
        lw.LayerwiseOptimizer(inner, ema=0.5)
    assert inner.gradient_accumulation_steps == 2 and inner.use_ema
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="`accumulate_steps` must be an int >= 1"):
            lw.LayerwiseOptimizer(keras.optimizers.Adam(), accumulate_steps=bad)


def test_batch_norm_statistics_move_on_every_micro_batch():
    """The documented behaviour: the forward pass runs per micro-batch, so
    BatchNormalization's moving statistics move k times per real step, as
    in a plain run over the same micro-batches (the optimizer never sees
    them), and not as in one large batch."""
    x, y = helpers.data(n=32)

    def moving_mean(optimizer, batch_size):
        keras.utils.set_random_seed(0)
        inputs = keras.Input((6,))
        h = keras.layers.BatchNormalization(momentum=0.5, name="bn")(inputs)
        model = keras.Model(inputs, keras.layers.Dense(2, name="out")(h))
        model.compile(optimizer=optimizer, loss="mse")
        model.fit(x, y, batch_size=batch_size, shuffle=False, verbose=0)
        return keras.ops.convert_to_numpy(model.get_layer("bn").moving_mean)

    accumulated = moving_mean(lw.LayerwiseOptimizer(keras.optimizers.SGD(0.1), accumulate_steps=4), 8)
    per_micro_batch = moving_mean(keras.optimizers.SGD(0.0), 8)
    large_batch = moving_mean(keras.optimizers.SGD(0.1), 32)
    np.testing.assert_allclose(accumulated, per_micro_batch, rtol=1e-6)
    assert not np.allclose(accumulated, large_batch, rtol=1e-3)
