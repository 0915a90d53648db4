"""`skip_nonfinite=True`: a step with a NaN/Inf gradient changes nothing
but the skip counter; training then continues as if it never happened."""

import keras
import numpy as np
import pytest

import layerwise as lw
from tests import helpers


def _state(opt, variables):
    values = [keras.ops.convert_to_numpy(v) for v in variables]
    values += [keras.ops.convert_to_numpy(v) for v in opt.variables if v is not opt.skipped_steps]
    return [np.array(v) for v in values]


def test_a_nonfinite_step_changes_nothing_and_is_counted():
    rng = np.random.default_rng(0)
    w0 = [rng.normal(size=s).astype("float32") for s in [(3, 2), (2,)]]
    grads = [[rng.normal(size=w.shape).astype("float32") for w in w0] for _ in range(5)]
    bad = [g.copy() for g in grads[0]]
    bad[1][0] = np.nan
    inf = [g.copy() for g in grads[0]]
    inf[0][1, 1] = np.inf

    def run(sequence):
        variables = [keras.Variable(w) for w in w0]
        opt = lw.LayerwiseOptimizer(
            keras.optimizers.Adam(0.1), [lw.Rule(variables[0], lr_scale=0.5)],
            accumulate_steps=2, ema=0.5, skip_nonfinite=True,
        )
        opt.build(variables)
        for g in sequence:
            before = _state(opt, variables)
            opt.apply([keras.ops.convert_to_tensor(x) for x in g], variables)
            if not all(np.isfinite(x).all() for x in g):
                for a, b in zip(_state(opt, variables), before):
                    np.testing.assert_array_equal(a, b)
        return opt, _state(opt, variables)

    opt, with_bad = run([grads[0], bad, grads[1], inf, grads[2], grads[3]])
    _, clean = run([grads[0], grads[1], grads[2], grads[3]])
    for a, b in zip(with_bad, clean):
        np.testing.assert_array_equal(a, b)
    assert int(keras.ops.convert_to_numpy(opt.skipped_steps)) == 2
    assert int(opt.iterations) == 2


def test_fit_skips_a_nan_batch(jit_compile):
    x, y = helpers.data(n=64)
    x_bad = x.copy()
    x_bad[16:32] = np.nan  # the second batch of 16 gives NaN gradients

    def fit(inputs, targets, skip=True):
        model = helpers.mlp()
        opt = lw.LayerwiseOptimizer(keras.optimizers.Adam(0.01), skip_nonfinite=skip)
        model.compile(optimizer=opt, loss="mse", jit_compile=jit_compile)
        history = model.fit(inputs, targets, batch_size=16, shuffle=False, verbose=0,
                            callbacks=[lw.callbacks.LogDiagnostics()] if skip else [])
        return model, history

    skipped, history = fit(x_bad, y)
    clean, _ = fit(np.concatenate([x[:16], x[32:]]), np.concatenate([y[:16], y[32:]]))
    helpers.assert_weights_close(helpers.weights(skipped), helpers.weights(clean), rtol=1e-6)
    assert history.history["skipped_steps"] == [1.0]
    default, _ = fit(x_bad, y, skip=False)
    assert np.isnan(helpers.weights(default)[0]).all()  # Keras' behaviour: NaN spreads


def test_under_loss_scale_optimizer(jit_compile):
    """The loss-scale optimizer skips overflowing steps itself (and lowers
    its scale); a NaN that survives unscaling is skipped by ours."""
    x, y = helpers.data(n=32)
    model = helpers.mlp()
    inner = lw.LayerwiseOptimizer(keras.optimizers.SGD(0.1), skip_nonfinite=True)
    model.compile(optimizer=keras.optimizers.LossScaleOptimizer(inner), loss="mse",
                  jit_compile=jit_compile)
    x_bad = x.copy()
    x_bad[:16] = np.nan
    model.fit(x_bad, y, batch_size=16, shuffle=False, verbose=0)
    assert all(np.isfinite(w).all() for w in helpers.weights(model))
    assert int(keras.ops.convert_to_numpy(inner.iterations)) == 1


def test_skipped_steps_needs_the_option():
    with pytest.raises(ValueError, match="only with `skip_nonfinite=True`"):
        lw.LayerwiseOptimizer(keras.optimizers.Adam()).skipped_steps
    with pytest.raises(TypeError, match="`skip_nonfinite` must be a bool"):
        lw.LayerwiseOptimizer(keras.optimizers.Adam(), skip_nonfinite="yes")
