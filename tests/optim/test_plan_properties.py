"""Property: for random layers and random rule sets, what `summary()` shows
is what one step does to every variable.

With plain SGD a step is `v <- v - v * wd * lr_v - lr_v * g` for a variable
with effective learning rate `lr_v` and decay `wd`, and nothing for a frozen
one; the prediction is computed from `summary_rows` alone.
"""

import keras
import numpy as np
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

import layerwise as lw

BASE_LR = 0.1

MATCHES = st.sampled_from(
    ["layer", "l0/.*", "l1/.*", ".*/bias", ".*/kernel", "(l0|l2)/kernel", "nothing/.*"]
)
RULES = st.lists(
    st.fixed_dictionaries(
        {
            "match": MATCHES,
            "layer_index": st.integers(0, 2),
            "lr_scale": st.sampled_from([None, 0.0, 0.5, 2.0]),
            "weight_decay": st.sampled_from([None, 0.0, 0.1]),
            "frozen": st.sampled_from([None, True, False]),
            "scale_grad": st.sampled_from([None, 0.5]),
        }
    ),
    max_size=5,
)


def _layers(n_layers):
    layers = []
    for i in range(n_layers):
        layer = keras.layers.Dense(2, name=f"l{i}")
        layer.build((None, 3 if i == 0 else 2))
        layers.append(layer)
    return layers


def _make_rules(specs, layers):
    rules = []
    for spec in specs:
        match = spec["match"]
        if match == "layer":
            match = layers[spec["layer_index"] % len(layers)]
        gradient = [lw.scale(spec["scale_grad"])] if spec["scale_grad"] else []
        rules.append(
            lw.Rule(
                match,
                lr_scale=spec["lr_scale"],
                weight_decay=spec["weight_decay"],
                frozen=spec["frozen"],
                gradient=gradient,
            )
        )
    return rules


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n_layers=st.integers(1, 3), specs=RULES, seed=st.integers(0, 2**16))
def test_summary_predicts_one_sgd_step(n_layers, specs, seed):
    layers = _layers(n_layers)
    variables = [v for layer in layers for v in layer.trainable_variables]
    rules = _make_rules(specs, layers)
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.SGD(BASE_LR, weight_decay=0.05), rules, strict=False
    )
    opt.build(variables)
    rows = {r["path"]: r for r in opt.summary_rows()}

    rng = np.random.default_rng(seed)
    grads = [rng.normal(size=v.shape).astype("float32") for v in variables]
    before = [np.array(keras.ops.convert_to_numpy(v)) for v in variables]
    opt.apply([keras.ops.convert_to_tensor(g) for g in grads], variables)

    for v, g, old in zip(variables, grads, before):
        row = rows[v.path]
        new = np.array(keras.ops.convert_to_numpy(v))
        if row["frozen"]:
            np.testing.assert_array_equal(new, old, err_msg=v.path)
            continue
        grad_factor = 1.0
        for rule in opt.rules:
            if rule.name in row["rules"] and rule.gradient:
                grad_factor *= rule.gradient[0].factor
        lr = row["effective_lr"]
        wd = row["weight_decay"] or 0.0
        expected = (old - old * wd * lr) - lr * grad_factor * g
        np.testing.assert_allclose(new, expected, rtol=1e-5, atol=1e-6, err_msg=v.path)


@settings(max_examples=15, deadline=None)
@given(specs=RULES)
def test_strict_build_fails_whole_or_succeeds_whole(specs):
    layers = _layers(3)
    variables = [v for layer in layers for v in layer.trainable_variables]
    rules = _make_rules(specs, layers)
    opt = lw.LayerwiseOptimizer(keras.optimizers.Adam(), rules)
    matches_nothing = any(
        not any(rule.matches(v) for v in variables) for rule in opt.rules
    )
    try:
        opt.build(variables)
    except ValueError as e:
        assert matches_nothing and "match no variable" in str(e)
        assert not opt.built and not opt.inner_optimizer.built
        return
    assert not matches_nothing and opt.built
    frozen = sum(r["frozen"] for r in opt.summary_rows())
    # Adam: iteration + learning rate + two slots per non-frozen variable.
    assert len(opt.inner_optimizer.variables) == 2 + 2 * (len(variables) - frozen)
