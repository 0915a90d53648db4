"""A variable with multiplier `s` follows the inner optimizer at `lr * s`,
for each of the 14 built-in optimizers below.

Two independent references: (1) a custom loop where each variable has its
own plain optimizer at `lr * s` and gradients computed in numpy; (2) `fit`
against Keras' `MultiOptimizer` with one plain optimizer per group.
"""

import keras
import numpy as np
import pytest

import layerwise as lw
from tests import helpers

# name -> (factory taking a learning rate, base learning rate)
OPTIMIZERS = {
    "sgd": (lambda lr, **kw: keras.optimizers.SGD(lr, **kw), 0.05),
    "momentum": (lambda lr, **kw: keras.optimizers.SGD(lr, momentum=0.9, **kw), 0.05),
    "nesterov": (
        lambda lr, **kw: keras.optimizers.SGD(lr, momentum=0.9, nesterov=True, **kw),
        0.05,
    ),
    "adam": (lambda lr, **kw: keras.optimizers.Adam(lr, **kw), 0.05),
    "adamw": (lambda lr, **kw: keras.optimizers.AdamW(lr, weight_decay=0.1, **kw), 0.05),
    "adamax": (lambda lr, **kw: keras.optimizers.Adamax(lr, **kw), 0.05),
    "nadam": (lambda lr, **kw: keras.optimizers.Nadam(lr, **kw), 0.05),
    "rmsprop": (lambda lr, **kw: keras.optimizers.RMSprop(lr, momentum=0.5, **kw), 0.01),
    "adagrad": (lambda lr, **kw: keras.optimizers.Adagrad(lr, **kw), 0.1),
    "adadelta": (lambda lr, **kw: keras.optimizers.Adadelta(lr, **kw), 1.0),
    "adafactor": (lambda lr, **kw: keras.optimizers.Adafactor(lr, **kw), 0.05),
    "lion": (lambda lr, **kw: keras.optimizers.Lion(lr, **kw), 0.01),
    "lamb": (lambda lr, **kw: keras.optimizers.Lamb(lr, **kw), 0.05),
    "ftrl": (lambda lr, **kw: keras.optimizers.Ftrl(lr, **kw), 0.1),
}

SHAPES = [(4, 3), (3,), (2, 2)]
SCALES = [0.1, 0.5, None]  # the third variable matches no rule
STEPS = 20


def _problem():
    rng = np.random.default_rng(7)
    a = [rng.uniform(0.5, 2.0, size=s).astype("float32") for s in SHAPES]
    t = [rng.normal(size=s).astype("float32") for s in SHAPES]
    w0 = [rng.normal(size=s).astype("float32") for s in SHAPES]
    return a, t, w0


def _grad(a, t, w):
    # Gradient of 0.5 * a * (w - t)**2, computed in numpy.
    return keras.ops.convert_to_tensor((a * (w - t)).astype("float32"))


def _variables(w0, prefix):
    return [keras.Variable(w, name=f"{prefix}{i}") for i, w in enumerate(w0)]


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_custom_loop_matches_separate_optimizers(name):
    factory, lr = OPTIMIZERS[name]
    a, t, w0 = _problem()
    variables = _variables(w0, "w")
    rules = [
        lw.Rule(variables[0], lr_scale=SCALES[0]),
        lw.Rule(variables[1], lr_scale=SCALES[1], weight_decay=0.0),
    ]
    opt = lw.LayerwiseOptimizer(factory(lr), rules)

    references = []
    for i, w in enumerate(w0):
        kwargs = {}
        if name == "adamw" and i == 1:
            kwargs = {"weight_decay": 0.0}
        scale = SCALES[i] if SCALES[i] is not None else 1.0
        ref_opt = (
            keras.optimizers.AdamW(lr * scale, weight_decay=0.0)
            if kwargs
            else factory(lr * scale)
        )
        references.append((ref_opt, keras.Variable(w, name=f"ref{i}")))

    for _ in range(STEPS):
        grads = [
            _grad(a[i], t[i], keras.ops.convert_to_numpy(v))
            for i, v in enumerate(variables)
        ]
        opt.apply(grads, variables)
        for i, (ref_opt, ref_var) in enumerate(references):
            ref_opt.apply([_grad(a[i], t[i], keras.ops.convert_to_numpy(ref_var))], [ref_var])

    assert int(keras.ops.convert_to_numpy(opt.iterations)) == STEPS
    for i, (ref_opt, ref_var) in enumerate(references):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(variables[i]),
            keras.ops.convert_to_numpy(ref_var),
            rtol=2e-5,
            atol=2e-6,
            err_msg=f"variable {i} (scale {SCALES[i]})",
        )
        # The variables moved: the comparison is not between two no-ops.
        assert not np.allclose(keras.ops.convert_to_numpy(ref_var), w0[i])


FIT_OPTIMIZERS = sorted(OPTIMIZERS)


def _multi_optimizer_reference(name, lr):
    factory, _ = OPTIMIZERS[name]
    groups = {"l0": factory(lr * 0.1), "l1": factory(lr * 0.5), "l2": factory(lr)}

    def select(variable):
        return groups[variable.path.split("/")[0]]

    return keras.optimizers.MultiOptimizer(select)


@pytest.mark.parametrize("name", FIT_OPTIMIZERS)
def test_fit_matches_multi_optimizer(name, jit_compile):
    factory, lr = OPTIMIZERS[name]
    x, y = helpers.data()

    model = helpers.mlp()
    opt = lw.LayerwiseOptimizer(
        factory(lr),
        [lw.Rule("l0/.*", lr_scale=0.1), lw.Rule(["l1/.*"], lr_scale=0.5)],
    )
    model.compile(opt, "mse", jit_compile=jit_compile)
    model.fit(x, y, batch_size=16, epochs=5, shuffle=False, verbose=0)

    reference = helpers.mlp()
    reference.compile(
        _multi_optimizer_reference(name, lr), "mse", jit_compile=jit_compile
    )
    reference.fit(x, y, batch_size=16, epochs=5, shuffle=False, verbose=0)

    assert int(keras.ops.convert_to_numpy(opt.iterations)) == 20
    helpers.assert_weights_close(
        helpers.weights(model), helpers.weights(reference), rtol=1e-4, atol=1e-5
    )


def test_unmatched_variables_follow_plain_optimizer(jit_compile):
    x, y = helpers.data()
    model = helpers.mlp()
    opt = lw.LayerwiseOptimizer(keras.optimizers.Adam(0.01), [lw.Rule("l0/.*", lr_scale=1.0)])
    model.compile(opt, "mse", jit_compile=jit_compile)
    model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)

    reference = helpers.mlp()
    reference.compile(keras.optimizers.Adam(0.01), "mse", jit_compile=jit_compile)
    reference.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    helpers.assert_weights_close(helpers.weights(model), helpers.weights(reference))
