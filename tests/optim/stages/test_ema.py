"""Weight EMA: the formula against a hand computation, Keras' `use_ema`
as a reference, the swap, and validation with the averages in `fit`."""

import os

import keras
import numpy as np
import pytest

import layerwise as lw
from tests import helpers


def _numpy(v):
    return np.array(keras.ops.convert_to_numpy(v))


@pytest.mark.parametrize("bias_correction", [False, True])
def test_ema_equals_a_hand_computation(bias_correction):
    """SGD on 0.5*(w - t)^2 with numpy gradients; the averages are
    recomputed in numpy from the weights after each step."""
    m, lr, steps = 0.8, 0.3, 6
    w0 = np.array([1.0, -2.0, 0.5], "float32")
    target = np.array([0.0, 1.0, 2.0], "float32")
    w, frozen = keras.Variable(w0), keras.Variable(w0)
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.SGD(lr), [lw.Rule(frozen, frozen=True)],
        ema=m, ema_bias_correction=bias_correction,
    )
    opt.build([w, frozen])
    history = []
    for _ in range(steps):
        g = _numpy(w) - target
        opt.apply([keras.ops.convert_to_tensor(g), keras.ops.convert_to_tensor(g)], [w, frozen])
        history.append(_numpy(w).astype("float64"))
    if bias_correction:
        raw = np.zeros(3)
        for ws in history:
            raw = m * raw + (1 - m) * ws
        expected = raw / (1 - m**steps)
    else:
        expected = history[0]
        for ws in history[1:]:
            expected = m * expected + (1 - m) * ws
    (variable, average), = opt.ema_pairs()  # the frozen variable has none
    assert variable is w
    np.testing.assert_allclose(_numpy(average), expected, rtol=1e-6)


def _fit(optimizer, jit_compile, epochs=2, **kwargs):
    model = helpers.mlp()
    model.compile(optimizer=optimizer, loss="mse", jit_compile=jit_compile)
    x, y = helpers.data(n=64)
    history = model.fit(x, y, batch_size=16, epochs=epochs, shuffle=False, verbose=0, **kwargs)
    return model, history


def test_inner_use_ema_matches_keras(jit_compile):
    """Taking over `Adam(use_ema=True)` gives Keras' own result, including
    its overwrite of the weights by the averages at the end of `fit`."""
    ours, _ = _fit(lw.LayerwiseOptimizer(keras.optimizers.Adam(0.01, use_ema=True, ema_momentum=0.7)), jit_compile)
    theirs, _ = _fit(keras.optimizers.Adam(0.01, use_ema=True, ema_momentum=0.7), jit_compile)
    helpers.assert_weights_close(helpers.weights(ours), helpers.weights(theirs), rtol=1e-5)
    assert ours.optimizer.ema_overwrite_at_end and not ours.optimizer.inner_optimizer.use_ema


def test_ema_weights_swaps_and_restores_bit_identically(tmp_path, jit_compile):
    model, _ = _fit(lw.LayerwiseOptimizer(keras.optimizers.Adam(0.01), ema=0.7), jit_compile)
    raw = helpers.weights(model)
    averages = [_numpy(a) for _, a in model.optimizer.ema_pairs()]
    assert not np.allclose(raw[0], averages[0])  # `fit` kept the raw weights
    path = os.path.join(tmp_path, "ema.keras")
    with lw.ema_weights(model):
        helpers.assert_weights_close(helpers.weights(model), averages, rtol=0, atol=0)
        model.save(path)
    helpers.assert_weights_close(helpers.weights(model), raw, rtol=0, atol=0)
    with pytest.raises(RuntimeError):
        with lw.ema_weights(model):
            raise RuntimeError("boom")
    helpers.assert_weights_close(helpers.weights(model), raw, rtol=0, atol=0)
    saved = keras.models.load_model(path)
    helpers.assert_weights_close(helpers.weights(saved), averages, rtol=0, atol=0)


def test_evaluate_with_ema_validates_with_the_averages(jit_compile):
    x, y = helpers.data(n=32, seed=1)
    model, history = _fit(
        lw.LayerwiseOptimizer(keras.optimizers.Adam(0.01), ema=0.7), jit_compile,
        validation_data=(x, y), callbacks=[lw.callbacks.EvaluateWithEMA()],
    )
    raw = model.evaluate(x, y, verbose=0)
    with lw.ema_weights(model):
        averaged = model.evaluate(x, y, verbose=0)
    np.testing.assert_allclose(history.history["val_loss"][-1], averaged, rtol=1e-5)
    assert not np.isclose(raw, averaged, rtol=1e-4)


def test_evaluate_with_ema_before_the_first_real_step_uses_raw_weights(jit_compile):
    """An epoch of 2 batches with `accumulate_steps=4`: the first epoch's
    validation comes before any real step, so it runs on the raw weights
    (and says so); the second uses the averages."""
    x, y = helpers.data(n=32, seed=1)
    model = helpers.mlp()
    opt = lw.LayerwiseOptimizer(keras.optimizers.Adam(0.01), accumulate_steps=4, ema=0.7)
    model.compile(optimizer=opt, loss="mse", jit_compile=jit_compile)
    history = model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0,
                        validation_data=(x, y), callbacks=[lw.callbacks.EvaluateWithEMA()])
    assert history.history["val_ema_weights"] == [0.0, 1.0]
    assert int(opt.iterations) == 1
    with lw.ema_weights(model):
        averaged = model.evaluate(x, y, verbose=0)
    np.testing.assert_allclose(history.history["val_loss"][-1], averaged, rtol=1e-5)


def test_ema_errors():
    for bad in (1.0, -0.1, "0.9", float("nan")):
        with pytest.raises(ValueError, match="`ema` must be a momentum in"):
            lw.LayerwiseOptimizer(keras.optimizers.Adam(), ema=bad)
    model = helpers.mlp()
    model.compile(optimizer=lw.LayerwiseOptimizer(keras.optimizers.Adam()), loss="mse")
    with pytest.raises(ValueError, match="must keep an EMA"):
        with lw.ema_weights(model):
            pass
    with pytest.raises(ValueError, match="`ema_overwrite_frequency` needs an EMA"):
        lw.LayerwiseOptimizer(keras.optimizers.Adam(), ema_overwrite_frequency=3)
    with pytest.raises(ValueError, match="`ema_overwrite_frequency` must be an int >= 1"):
        lw.LayerwiseOptimizer(keras.optimizers.Adam(), ema=0.9, ema_overwrite_frequency=0)


def test_ema_overwrite_frequency_taken_over_equals_keras(jit_compile):
    """Keras' `use_ema` with `ema_overwrite_frequency=3`: every third step
    the weights become their averages. Taken over from the inner optimizer,
    the wrapper trains exactly as the plain optimizer."""
    def make():
        return keras.optimizers.Adam(0.01, use_ema=True, ema_momentum=0.8, ema_overwrite_frequency=3)

    wrapped, _ = _fit(lw.LayerwiseOptimizer(make()), jit_compile)
    plain, _ = _fit(make(), jit_compile)
    assert wrapped.optimizer.ema_overwrite_frequency == 3
    helpers.assert_weights_close(helpers.weights(wrapped), helpers.weights(plain), rtol=1e-6, atol=1e-7)
