"""Update transforms in the step: exact against hand computations, Keras'
`Lamb` and optax; composed with decay, accumulation, the non-finite
guard, freezing, group optimizers, EMA, diagnostics and saving."""

import keras
import numpy as np
import pytest

import layerwise as lw
from tests import helpers
from tests.conftest import only_on

W0 = [np.array([[0.5, -1.0], [2.0, 0.25]], "float32"), np.array([0.3, -0.2], "float32")]
GRADS = [
    [np.array([[1.0, -2.0], [0.5, 1.5]], "float32"), np.array([0.2, 0.4], "float32")],
    [np.array([[-0.5, 1.0], [1.0, -1.0]], "float32"), np.array([-0.3, 0.1], "float32")],
    [np.array([[0.2, 0.3], [-2.0, 0.7]], "float32"), np.array([0.5, -0.6], "float32")],
]


def _variables():
    return [keras.Variable(w, name=f"v{i}") for i, w in enumerate(W0)]


def _run(optimizer, steps=GRADS, variables=None):
    variables = variables or _variables()
    optimizer.build(variables)
    for grads in steps:
        optimizer.apply([keras.ops.convert_to_tensor(g) for g in grads], variables)
    return [np.array(keras.ops.convert_to_numpy(v)) for v in variables]


def _norm(x):
    return np.sqrt(np.sum(np.asarray(x, "float64") ** 2))


def _sgd_momentum_trust(lr, momentum):
    w = [x.astype("float64") for x in W0]
    m = [np.zeros_like(x) for x in w]
    for grads in GRADS:
        for i, g in enumerate(grads):
            m[i] = momentum * m[i] - lr * g
            ratio = _norm(w[i]) / (_norm(m[i]) / lr)
            w[i] = w[i] + m[i] * ratio
    return w


def test_sgd_momentum_with_trust_ratio_matches_hand():
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.SGD(0.1, momentum=0.9), [lw.Rule(".*", update=[lw.trust_ratio()])]
    )
    helpers.assert_weights_close(_run(opt), _sgd_momentum_trust(0.1, 0.9), rtol=1e-5)


@only_on("jax")
def test_sgd_momentum_with_trust_ratio_equals_optax_chain():
    """The same math in optax: trace (Keras' velocity over the rate), the
    trust ratio, then the rate. (`optax.lars` puts the ratio on the
    gradient, before the momentum: there use a gradient transform.)"""
    import optax

    lr = 0.1
    tx = optax.chain(optax.trace(0.9), optax.scale_by_trust_ratio(), optax.scale(-lr))
    params = list(W0)
    state = tx.init(params)
    for grads in GRADS:
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.SGD(lr, momentum=0.9), [lw.Rule(".*", update=[lw.trust_ratio()])]
    )
    helpers.assert_weights_close(_run(opt), [np.asarray(p) for p in params], rtol=1e-5)


@only_on("jax")
def test_adam_with_trust_ratio_equals_optax_lamb_without_decay():
    import optax

    tx = optax.lamb(0.01, eps=1e-12)
    params = list(W0)
    state = tx.init(params)
    for grads in GRADS:
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.Adam(0.01, epsilon=1e-12), [lw.Rule(".*", update=[lw.trust_ratio()])]
    )
    helpers.assert_weights_close(_run(opt), [np.asarray(p) for p in params], rtol=1e-5)


def test_adamw_with_trust_ratio_equals_keras_lamb():
    """Keras' `Lamb` decays outside the ratio, as an update transform does.
    (Its epsilon sits inside the debiased root, Adam's outside: a tiny
    epsilon makes them the same.)"""
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.AdamW(0.01, weight_decay=0.05, epsilon=1e-12),
        [lw.Rule(".*", update=[lw.trust_ratio()])],
    )
    lamb = keras.optimizers.Lamb(0.01, weight_decay=0.05, epsilon=1e-12)
    helpers.assert_weights_close(_run(opt), _run(lamb), rtol=1e-5)


def test_cautious_adamw_matches_timm_formula():
    lr, wd, b1, b2, eps = 0.01, 0.1, 0.9, 0.999, 1e-7
    w = [x.astype("float64") for x in W0]
    m = [np.zeros_like(x) for x in w]
    v = [np.zeros_like(x) for x in w]
    for t, grads in enumerate(GRADS, start=1):
        for i, g in enumerate(grads):
            w[i] = w[i] - w[i] * wd * lr  # decoupled decay, outside the mask
            m[i] = m[i] + (g - m[i]) * (1 - b1)
            v[i] = v[i] + (g * g - v[i]) * (1 - b2)
            alpha = lr * np.sqrt(1 - b2**t) / (1 - b1**t)
            mask = (m[i] * g > 0).astype("float64")  # timm: exp_avg * grad > 0
            mask = mask / max(mask.mean(), 1e-3)
            w[i] = w[i] - (m[i] * mask) * alpha / (np.sqrt(v[i]) + eps)
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.AdamW(lr, weight_decay=wd, epsilon=eps),
        [lw.Rule(".*", update=[lw.cautious()])],
    )
    helpers.assert_weights_close(_run(opt), w, rtol=1e-5)


def test_decay_lands_outside_the_transforms():
    lr, wd = 0.1, 0.2
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.AdamW(lr, weight_decay=wd),
        [lw.Rule(".*", update=[lambda u, g, w: u * 0.0])],
    )
    helpers.assert_weights_close(_run(opt, GRADS[:1]), [w * (1 - wd * lr) for w in W0])


def test_transforms_chain_in_rule_order_per_variable():
    lr = 0.5
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.SGD(lr),
        [
            lw.Rule("v0", update=[lw.clip_update(0.1)], name="a"),
            lw.Rule(".*", update=[lambda u, g, w: u * 3.0], name="b"),
        ],
    )
    g0, g1 = GRADS[0]
    step0 = -lr * g0 * 0.1 / max(_norm(lr * g0), 0.1) * 3.0
    helpers.assert_weights_close(_run(opt, GRADS[:1]), [W0[0] + step0, W0[1] - lr * g1 * 3.0])


def test_relative_gradient_norm_over_the_rules_tensors_with_lr_scale():
    lr = 0.1
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.SGD(lr),
        [lw.Rule("v1", lr_scale=0.5), lw.Rule(".*", update=[lw.relative_gradient_norm()])],
    )
    grads = GRADS[0]
    relative = [_norm(g) / _norm(w) for g, w in zip(grads, W0)]
    rates = [lr, lr * 0.5]
    want = [w - r * g * rel / max(relative) for w, g, r, rel in zip(W0, grads, rates, relative)]
    helpers.assert_weights_close(_run(opt, GRADS[:1]), want)


def test_skip_large_updates_leaves_weights_but_advances_slots():
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.SGD(1.0, momentum=0.1), [lw.Rule(".*", update=[lw.skip_large_updates(1.0)])]
    )
    variables = _variables()
    after = _run(opt, GRADS[:1], variables)
    helpers.assert_weights_close(after, W0)  # ||lr * g|| > 1: skipped
    momenta = [np.array(keras.ops.convert_to_numpy(m)) for m in opt.inner_optimizer.momentums]
    helpers.assert_weights_close(momenta, [-g for g in GRADS[0]])
    small = [[g * 1e-3 for g in GRADS[1]]]
    want = [w + 0.1 * m - 1e-3 * g for w, m, g in zip(W0, momenta, GRADS[1])]
    helpers.assert_weights_close(_run(opt, small, variables), want)


def test_group_optimizer_with_update_transform_and_untouched_groups():
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.Adam(0.01),
        [lw.Rule("v1", optimizer=keras.optimizers.SGD(0.1), update=[lambda u, g, w: u * 0.5])],
    )
    reference = lw.LayerwiseOptimizer(
        keras.optimizers.Adam(0.01), [lw.Rule("v1", optimizer=keras.optimizers.SGD(0.1), lr_scale=0.5)]
    )
    helpers.assert_weights_close(_run(opt), _run(reference), rtol=1e-6)


def test_accumulation_runs_transforms_once_per_real_step():
    rules = [lw.Rule(".*", update=[lw.trust_ratio(), lw.cautious()])]
    accumulated = lw.LayerwiseOptimizer(
        keras.optimizers.SGD(0.1, momentum=0.9), rules, accumulate_steps=2
    )
    micro = [GRADS[0], GRADS[1]]
    mean = [[(a + b) / 2 for a, b in zip(*micro)]]
    plain = lw.LayerwiseOptimizer(keras.optimizers.SGD(0.1, momentum=0.9), rules)
    helpers.assert_weights_close(_run(accumulated, micro), _run(plain, mean), rtol=1e-6)


def test_skipped_nonfinite_step_runs_no_transform():
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.SGD(0.1),
        [lw.Rule(".*", update=[lambda u, g, w: u + 1.0])],
        skip_nonfinite=True,
    )
    bad = [[np.full_like(g, np.nan) for g in GRADS[0]]]
    helpers.assert_weights_close(_run(opt, bad), W0)


def test_frozen_variables_get_no_transform():
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.SGD(0.1),
        [lw.Rule(".*", update=[lambda u, g, w: u + 1.0]), lw.Rule("v0", frozen=True)],
    )
    variables = _variables()
    after = _run(opt, GRADS[:1], variables)
    helpers.assert_weights_close(after, [W0[0], W0[1] - 0.1 * GRADS[0][1] + 1.0])


def test_ema_averages_the_transformed_weights():
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.SGD(0.1), [lw.Rule(".*", update=[lw.clip_update(0.01)])], ema=0.5
    )
    after = _run(opt, GRADS[:1])
    averages = [np.array(keras.ops.convert_to_numpy(a)) for _, a in opt.ema_pairs()]
    helpers.assert_weights_close(averages, after)  # the first step copies, as Keras'


def test_update_norm_diagnostic_is_taken_after_the_transforms():
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.SGD(1.0),
        [lw.Rule("v0", update=[lw.clip_update(0.01)], name="clipped"), lw.Rule("v1", name="plain")],
        log=("update_norm", "update_ratio"),
    )
    _run(opt, GRADS[:1])
    values = opt.diagnostics()
    np.testing.assert_allclose(values["update_norm/clipped"], 0.01, rtol=1e-5)
    np.testing.assert_allclose(values["update_norm/plain"], _norm(GRADS[0][1]), rtol=1e-5)
    np.testing.assert_allclose(values["update_ratio/clipped"], 0.01 / _norm(W0[0]), rtol=1e-5)


def test_wrong_shape_fails_at_build_before_any_state():
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.Adam(), [lw.Rule(".*", update=[lambda u, g, w: keras.ops.sum(u)])]
    )
    variables = _variables()
    with pytest.raises(TypeError, match="must keep the variables' shapes"):
        opt.build(variables)
    assert not opt.built
    helpers.assert_weights_close([keras.ops.convert_to_numpy(v) for v in variables], W0)


def test_wrong_dtype_fails_in_fit_with_weights_untouched():
    model = helpers.mlp()
    before = helpers.weights(model)
    model.compile(
        lw.LayerwiseOptimizer(
            keras.optimizers.SGD(0.1),
            [lw.Rule(".*kernel", update=[lambda u, g, w: keras.ops.cast(u, "float16")])],
        ),
        "mse",
    )
    x, y = helpers.data(8)
    with pytest.raises(TypeError, match="must keep the variables' dtype"):
        model.fit(x, y, verbose=0)
    helpers.assert_weights_close(helpers.weights(model), before)


def test_summary_and_repr_show_update_transforms():
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.SGD(0.1),
        [lw.Rule("v0", update=[lw.trust_ratio()], project=[lw.unit_norm(1)], name="t")],
    )
    opt.build(_variables())
    rows = {r["path"]: r for r in opt.summary_rows()}
    assert rows["v0"]["update_transforms"] == [repr(lw.trust_ratio())]
    assert rows["v0"]["projections"] == ["UnitNorm(axis=1)"]
    assert rows["v1"]["update_transforms"] == [] and rows["v1"]["projections"] == []
    printed = []
    opt.summary(print_fn=printed.append)
    assert "update:TrustRatio(trust_coefficient=1.0, eps=0.0, min_norm=0.0)" in printed[0]
    assert "project:UnitNorm(axis=1)" in printed[0]
    assert "update=[TrustRatio(" in repr(opt.get_rule("t"))


def test_save_load_continue_identically(tmp_path, jit_compile):
    x, y = helpers.data(32)

    def compiled(model):
        model.compile(
            lw.LayerwiseOptimizer(
                keras.optimizers.Adam(0.01),
                [
                    lw.Rule(".*kernel", update=[lw.trust_ratio(), lw.clip_update(0.5)],
                            project=[lw.max_norm(1.0)], name="kernels"),
                    lw.Rule("l2/.*", update=[lw.relative_gradient_norm()], name="head"),
                ],
            ),
            "mse",
            jit_compile=jit_compile,
        )
        return model

    model = compiled(helpers.mlp())
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert repr(loaded.optimizer.rules) == repr(model.optimizer.rules)
    for m in (model, loaded):
        m.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    helpers.assert_weights_close(helpers.weights(loaded), helpers.weights(model), rtol=1e-6)
