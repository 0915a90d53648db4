"""Per-rule diagnostics (`log=`): values against hand computations, and
their way into `fit`'s logs through `LogDiagnostics`."""

import keras
import numpy as np
import pytest

import layerwise as lw
from tests import helpers

STATS = ("lr", "grad_norm", "update_ratio")


def test_diagnostics_equal_a_hand_computation():
    """One SGD step with numpy gradients; the body's gradients are clipped
    by norm first, so `grad_norm` must be the processed norm."""
    lr = 0.1
    rng = np.random.default_rng(0)
    w0 = [rng.normal(size=s).astype("float32") for s in [(3, 2), (2,), (2, 2)]]
    g = [rng.normal(size=s).astype("float32") * 3 for s in [(3, 2), (2,), (2, 2)]]
    body = [keras.Variable(w0[0]), keras.Variable(w0[1])]
    head = keras.Variable(w0[2])
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.SGD(lr),
        [lw.Rule(body, lr_scale=0.5, gradient=lw.clip_by_global_norm(1.0), name="body"),
         lw.Rule(head, name="head")],
        log=STATS,
    )
    opt.apply([keras.ops.convert_to_tensor(x) for x in g], body + [head])
    d = opt.diagnostics()
    raw_norm = np.sqrt(sum((x.astype("float64") ** 2).sum() for x in g[:2]))
    assert raw_norm > 1.0  # so the clip is active
    np.testing.assert_allclose(d["grad_norm/body"], 1.0, rtol=1e-6)
    np.testing.assert_allclose(d["grad_norm/head"], np.linalg.norm(g[2]), rtol=1e-6)
    np.testing.assert_allclose(d["lr/body"], lr * 0.5, rtol=1e-6)
    np.testing.assert_allclose(d["lr/head"], lr, rtol=1e-6)
    w0_body_norm = np.sqrt(sum((w.astype("float64") ** 2).sum() for w in w0[:2]))
    np.testing.assert_allclose(d["update_ratio/body"], lr * 0.5 * 1.0 / w0_body_norm, rtol=1e-5)
    np.testing.assert_allclose(
        d["update_ratio/head"], lr * np.linalg.norm(g[2]) / np.linalg.norm(w0[2]), rtol=1e-5
    )


def test_logs_in_fit_match_what_the_weights_did(jit_compile):
    """One full-batch SGD step per epoch: in History, `update_ratio` equals
    |w1 - w0| / |w0| of the weights and `grad_norm` equals
    |w1 - w0| / lr_eff (SGD moves by lr_eff * gradient)."""
    model = helpers.mlp()
    x, y = helpers.data(n=32)
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.SGD(0.1),
        [lw.Rule(model.get_layer("l0"), lr_scale=0.3, name="body")],
        log=STATS,
    )
    model.compile(optimizer=opt, loss="mse", jit_compile=jit_compile)
    w0 = helpers.weights(model)[:2]
    history = model.fit(x, y, batch_size=32, epochs=1, verbose=0,
                        callbacks=[lw.callbacks.LogDiagnostics()])
    w1 = helpers.weights(model)[:2]
    change = np.sqrt(sum(((a - b).astype("float64") ** 2).sum() for a, b in zip(w1, w0)))
    size = np.sqrt(sum((b.astype("float64") ** 2).sum() for b in w0))
    h = history.history
    assert {"lr/body", "grad_norm/body", "update_ratio/body", "loss"} <= set(h)
    np.testing.assert_allclose(h["lr/body"][0], 0.03, rtol=1e-6)
    np.testing.assert_allclose(h["update_ratio/body"][0], change / size, rtol=1e-4)
    np.testing.assert_allclose(h["grad_norm/body"][0], change / 0.03, rtol=1e-4)
    assert h["grad_norm/body"][0] == pytest.approx(opt.diagnostics()["grad_norm/body"])


def test_progress_bar_shows_the_diagnostics(capsys):
    model = helpers.mlp()
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.SGD(0.1), [lw.Rule(model.get_layer("l2"), name="head")], log=("grad_norm",)
    )
    model.compile(optimizer=opt, loss="mse")
    x, y = helpers.data(n=32)
    model.fit(x, y, batch_size=16, verbose=1, callbacks=[lw.callbacks.LogDiagnostics()])
    assert "grad_norm/head" in capsys.readouterr().out


def test_nothing_is_added_when_off():
    model = helpers.mlp()
    rules = [lw.Rule(model.get_layer("l0"), lr_scale=0.5, name="body")]
    off = lw.LayerwiseOptimizer(keras.optimizers.Adam(), rules)
    on = lw.LayerwiseOptimizer(keras.optimizers.Adam(), rules, log=STATS)
    assert off.diagnostics() == {} and off.log_variables == {}
    assert len(on.variables) - len(off.variables) == 3  # 3 stats x 1 rule
    assert sorted(on.diagnostics()) == ["grad_norm/body", "lr/body", "update_ratio/body"]


def test_diagnostics_errors():
    with pytest.raises(ValueError, match="`log` must be a tuple of names among"):
        lw.LayerwiseOptimizer(keras.optimizers.Adam(), log=("loss",))
    model = helpers.mlp()
    model.compile(optimizer=lw.LayerwiseOptimizer(keras.optimizers.Adam()), loss="mse")
    with pytest.raises(ValueError, match="created with `log="):
        model.fit(*helpers.data(n=8), verbose=0, callbacks=[lw.callbacks.LogDiagnostics()])
