"""Every Keras optimizer keeps its own semantics under the wrapper.

Without rules, `LayerwiseOptimizer(opt)` trains exactly as `opt` in `fit`
(to 1e-6) for every built-in optimizer, with the constructor options that
change its math, on a model with an Embedding, Dense and Conv kernels and
normalization layers. With a multiplier `s` on a group, that group follows
the optimizer at `lr * s` (Keras' `MultiOptimizer` as reference).
`exclude_from_weight_decay` is honoured as Keras honours it.
"""

import keras
import numpy as np
import pytest

import layerwise as lw
from tests import helpers
from tests.conftest import BACKEND
from tests.conftest import JIT_MODES

# name -> factory of the plain optimizer, taking the learning rate
OPTIMIZERS = {
    "sgd": lambda lr: keras.optimizers.SGD(lr),
    "nesterov": lambda lr: keras.optimizers.SGD(lr, momentum=0.9, nesterov=True),
    "adam": lambda lr: keras.optimizers.Adam(lr, amsgrad=True),
    "adamw": lambda lr: keras.optimizers.AdamW(lr, weight_decay=0.1),
    "adamax": lambda lr: keras.optimizers.Adamax(lr, weight_decay=0.05),
    "nadam": lambda lr: keras.optimizers.Nadam(lr),
    "rmsprop": lambda lr: keras.optimizers.RMSprop(lr, momentum=0.5, centered=True),
    "adagrad": lambda lr: keras.optimizers.Adagrad(lr),
    "adadelta": lambda lr: keras.optimizers.Adadelta(lr * 100),
    "adafactor": lambda lr: keras.optimizers.Adafactor(lr),
    "lion": lambda lr: keras.optimizers.Lion(lr / 10, weight_decay=0.1),
    "lamb": lambda lr: keras.optimizers.Lamb(lr),
    "ftrl": lambda lr: keras.optimizers.Ftrl(lr * 10, l1_regularization_strength=0.01),
    "muon": lambda lr: keras.optimizers.Muon(lr, weight_decay=0.5, adam_weight_decay=0.1),
    "muon_options": lambda lr: keras.optimizers.Muon(
        lr, weight_decay=0.2, adam_weight_decay=0.0, exclude_layers=["dense_b"],
        exclude_embeddings=False, rms_rate=None, nesterov=False, adam_lr_ratio=0.5,
    ),
    "schedule_free_adamw": lambda lr: keras.optimizers.ScheduleFreeAdamW(
        lr, weight_decay=0.01, warmup_steps=3
    ),
}
LR = 0.01

# The optimizers with their own decay routing, schedule or step state run
# with and without compilation; the others in the mode Keras picks by default
# on a CPU (`jit_compile="auto"`: XLA on JAX only), which keeps the suite
# short: XLA takes up to a minute to compile some of them on TensorFlow.
# `test_optimizer_exactness.py` runs every one of them compiled on both.
BOTH_MODES = ("adamw", "muon", "muon_options", "nadam", "schedule_free_adamw")
CASES = [
    (name, jit)
    for name in sorted(OPTIMIZERS)
    for jit in (JIT_MODES if name in BOTH_MODES else [BACKEND == "jax"])
]


def _case_id(case):
    return f"{case[0]}-jit={case[1]}"


def _model():
    keras.utils.set_random_seed(4)
    inputs = keras.Input((6,), dtype="int32")
    x = keras.layers.Embedding(20, 8, name="embedding")(inputs)
    x = keras.layers.Conv1D(8, 3, padding="same", name="conv")(x)
    x = keras.layers.LayerNormalization(name="layer_norm")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(16, activation="tanh", name="dense_a")(x)
    x = keras.layers.BatchNormalization(name="batch_norm")(x)
    x = keras.layers.Dense(16, activation="tanh", name="dense_b")(x)
    outputs = keras.layers.Dense(3, name="head")(x)
    return keras.Model(inputs, outputs)


def _data():
    rng = np.random.default_rng(5)
    return (rng.integers(0, 20, size=(48, 6)).astype("int32"),
            rng.normal(size=(48, 3)).astype("float32"))


def _fit(optimizer, jit_compile):
    model = _model()
    model.compile(optimizer=optimizer, loss="mse", jit_compile=jit_compile)
    x, y = _data()
    model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)  # 12 steps
    return model


@pytest.mark.parametrize("name, jit_compile", CASES, ids=[_case_id(c) for c in CASES])
def test_no_rules_equals_the_plain_optimizer(name, jit_compile):
    factory = OPTIMIZERS[name]
    wrapped = _fit(lw.LayerwiseOptimizer(factory(LR)), jit_compile)
    plain = _fit(factory(LR), jit_compile)
    helpers.assert_weights_close(helpers.weights(wrapped), helpers.weights(plain), rtol=1e-6, atol=1e-6)
    assert not np.allclose(helpers.weights(plain)[1], helpers.weights(_model())[1])


@pytest.mark.parametrize("name, jit_compile", CASES, ids=[_case_id(c) for c in CASES])
def test_group_with_multiplier_equals_the_optimizer_at_scaled_rate(name, jit_compile):
    factory = OPTIMIZERS[name]
    body = ("embedding/", "conv/", "layer_norm/", "dense_a/")
    wrapped = _fit(
        lw.LayerwiseOptimizer(factory(LR), [lw.Rule(lambda v: v.path.startswith(body), lr_scale=0.3)]),
        jit_compile,
    )
    slow, fast = factory(LR * 0.3), factory(LR)
    reference = _fit(
        keras.optimizers.MultiOptimizer(lambda v: slow if v.path.startswith(body) else fast),
        jit_compile,
    )
    helpers.assert_weights_close(helpers.weights(wrapped), helpers.weights(reference), rtol=1e-5, atol=1e-6)


def test_muon_decay_override_replaces_both_coefficients(jit_compile):
    """`Rule(weight_decay=w)` on variables Muon updates replaces the
    coefficient that applies to each: `weight_decay` on the matrices Muon
    orthogonalizes, `adam_weight_decay` on those its AdamW path updates."""
    wrapped = _fit(
        lw.LayerwiseOptimizer(
            keras.optimizers.Muon(LR, weight_decay=0.5, adam_weight_decay=0.1),
            [lw.Rule(".*", weight_decay=0.3)],
        ),
        jit_compile,
    )
    plain = _fit(keras.optimizers.Muon(LR, weight_decay=0.3, adam_weight_decay=0.3), jit_compile)
    helpers.assert_weights_close(helpers.weights(wrapped), helpers.weights(plain), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("where", ["wrapper", "inner"])
def test_exclude_from_weight_decay_is_honoured_as_keras_does(where, jit_compile):
    def exclude(optimizer):
        optimizer.exclude_from_weight_decay(var_names=["bias", "gamma"])
        return optimizer

    inner = keras.optimizers.AdamW(LR, weight_decay=0.5)
    if where == "inner":
        wrapped = lw.LayerwiseOptimizer(exclude(inner))
    else:
        wrapped = exclude(lw.LayerwiseOptimizer(inner))
    model = _fit(wrapped, jit_compile)
    plain = _fit(exclude(keras.optimizers.AdamW(LR, weight_decay=0.5)), jit_compile)
    helpers.assert_weights_close(helpers.weights(model), helpers.weights(plain), rtol=1e-6, atol=1e-6)
    undecayed = _fit(keras.optimizers.AdamW(LR, weight_decay=0.5), jit_compile)
    assert not np.allclose(helpers.weights(model)[2], helpers.weights(undecayed)[2])  # conv/bias
    rows = {r["path"]: r["weight_decay"] for r in wrapped.summary_rows()}
    assert rows["conv/bias"] is None and rows["conv/kernel"] == 0.5


def test_exclude_from_weight_decay_reaches_every_group_optimizer():
    muon = keras.optimizers.Muon(LR, weight_decay=0.5, adam_weight_decay=0.5)
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.AdamW(LR, weight_decay=0.5), [lw.Rule("dense_.*", optimizer=muon)]
    )
    model = _model()
    opt.exclude_from_weight_decay(var_list=[model.get_layer("dense_a").kernel], var_names=["bias"])
    opt.build(model.trainable_variables)
    rows = {r["path"]: r["weight_decay"] for r in opt.summary_rows()}
    assert rows["dense_a/kernel"] is None and rows["dense_b/kernel"] == 0.5
    assert rows["dense_b/bias"] is None and rows["head/bias"] is None
    assert rows["head/kernel"] == 0.5


def test_exclude_from_weight_decay_after_build_is_refused():
    model = _model()
    opt = lw.LayerwiseOptimizer(keras.optimizers.AdamW(LR))
    opt.build(model.trainable_variables)
    with pytest.raises(ValueError, match="before the optimizer is built"):
        opt.exclude_from_weight_decay(var_names=["bias"])


class _DoubleDecaySGD(keras.optimizers.SGD):
    """A user optimizer with a decay rule of its own (twice Keras')."""

    def _apply_weight_decay(self, variables):
        for variable in variables:
            lr = keras.ops.cast(self.learning_rate, variable.dtype)
            variable.assign(variable - variable * 2.0 * self.weight_decay * lr)


def test_a_custom_decay_rule_runs_at_the_group_rate():
    """An optimizer overriding `_apply_weight_decay` keeps its rule, at the
    learning rate of each group (here 0.5 x)."""
    w = keras.Variable(np.ones(3, "float32"), name="w")
    v = keras.Variable(np.ones(3, "float32"), name="v")
    opt = lw.LayerwiseOptimizer(_DoubleDecaySGD(0.1, weight_decay=0.1), [lw.Rule(v, lr_scale=0.5)])
    reference_w = keras.Variable(np.ones(3, "float32"), name="ref_w")
    reference_v = keras.Variable(np.ones(3, "float32"), name="ref_v")
    plain_w, plain_v = _DoubleDecaySGD(0.1, weight_decay=0.1), _DoubleDecaySGD(0.05, weight_decay=0.1)
    g = np.full(3, 0.5, "float32")
    for _ in range(3):
        opt.apply([g, g], [w, v])
        plain_w.apply([g], [reference_w])
        plain_v.apply([g], [reference_v])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(w), keras.ops.convert_to_numpy(reference_w), rtol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(v), keras.ops.convert_to_numpy(reference_v), rtol=1e-6)
    assert float(keras.ops.convert_to_numpy(opt.inner_optimizer.learning_rate)) == pytest.approx(0.1)
