"""`FlattenedMuon`: convolution kernels orthogonalized as the matrix
`(prod(shape[:-1]), shape[-1])`, against a hand-written NumPy reference of
Keras' Muon step (its Newton-Schulz coefficients, Nesterov momentum,
`rms_rate` scaling and decoupled weight decay); through `muon_rules(...,
conv="flatten")` in `fit`; saving."""

import math

import keras
import numpy as np
import pytest

import layerwise as lw
from layerwise.recipes.muon import muon_rules
from tests import helpers

LR, WD, MOMENTUM, RMS_RATE = 0.05, 0.1, 0.95, 0.2


def _newton_schulz(g, steps=5, a=3.4445, b=-4.7750, c=2.0315):
    """Keras' `zeropower_via_newtonschulz5`, in NumPy."""
    x = g.T if g.shape[0] > g.shape[1] else g
    x = x / (np.linalg.norm(x) + 1e-7)
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if g.shape[0] > g.shape[1] else x


def _reference_steps(kernel, grads):
    """Muon on `kernel` flattened to `(prod(shape[:-1]), shape[-1])`: decay
    `w -= w * wd * lr`, momentum `m = momentum * m + g`, Nesterov
    `g + momentum * m`, orthogonalized and scaled by `sqrt(max(rows, cols))
    * rms_rate`, reshaped back."""
    shape = kernel.shape
    rows, cols = math.prod(shape[:-1]), shape[-1]
    w = kernel.astype("float64")
    m = np.zeros_like(w)
    for g in grads:
        w = w - w * WD * LR
        m = MOMENTUM * m + g
        nesterov = (g + MOMENTUM * m).reshape(rows, cols)
        update = _newton_schulz(nesterov) * LR * math.sqrt(max(rows, cols)) * RMS_RATE
        w = w - update.reshape(shape)
    return w


def _muon(cls=lw.FlattenedMuon):
    return cls(LR, weight_decay=WD, momentum=MOMENTUM, rms_rate=RMS_RATE)


@pytest.mark.parametrize(
    "shape", [(3, 3, 4, 8), (2, 2, 24)], ids=["conv2d-tall-36x8", "conv1d-wide-4x24"]
)
def test_conv_kernel_steps_equal_numpy_reference(shape):
    rng = np.random.default_rng(0)
    start = rng.normal(size=shape).astype("float32")
    grads = [rng.normal(size=shape).astype("float32") for _ in range(3)]
    kernel = keras.Variable(start, name="kernel")
    opt = _muon()
    for g in grads:
        opt.apply([keras.ops.convert_to_tensor(g)], [kernel])
    expected = _reference_steps(start, grads)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(kernel), expected, rtol=1e-4, atol=1e-5)
    assert np.abs(expected - start).max() > 1e-2


def test_matrices_vectors_and_exclusions_update_as_keras_muon():
    rng = np.random.default_rng(1)
    shapes = {"dense/kernel": (12, 6), "dense/bias": (6,), "embedding/embeddings": (2, 4, 8)}
    values = {path: rng.normal(size=shape).astype("float32") for path, shape in shapes.items()}
    grads = [
        [keras.ops.convert_to_tensor(rng.normal(size=s).astype("float32")) for s in shapes.values()]
        for _ in range(2)
    ]
    results = []
    for cls in (lw.FlattenedMuon, keras.optimizers.Muon):
        variables = [keras.Variable(v, name=p.split("/")[1]) for p, v in values.items()]
        opt = _muon(cls)
        opt.build(variables)
        for g in grads:
            opt.apply(g, variables)
        results.append([keras.ops.convert_to_numpy(v) for v in variables])
    helpers.assert_weights_close(results[0], results[1], rtol=1e-6, atol=1e-7)


def _full_window_conv():
    """A Conv2D whose window covers its input: its output is
    `x.reshape(n, 36) @ kernel.reshape(36, 8)`, so the gradient of the
    mean squared error is known in closed form."""
    rng = np.random.default_rng(2)
    kernel = rng.normal(size=(3, 3, 4, 8)).astype("float32") / 6.0
    inputs = keras.Input((3, 3, 4))
    conv = keras.layers.Conv2D(
        8, 3, use_bias=False, kernel_initializer=keras.initializers.Constant(kernel), name="conv"
    )
    model = keras.Model(inputs, keras.layers.Flatten()(conv(inputs)))
    return model, kernel


def test_fit_with_muon_rules_flatten_equals_reference(jit_compile):
    model, kernel = _full_window_conv()
    rules = muon_rules(model, muon=_muon(), output_layers=[], conv="flatten")
    assert [(r.name, r.selector.paths) for r in rules] == [("muon", ("conv/kernel",))]
    model.compile(
        optimizer=lw.LayerwiseOptimizer(keras.optimizers.AdamW(1e-3), rules),
        loss="mse", jit_compile=jit_compile,
    )
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, 3, 3, 4)).astype("float32")
    y = rng.normal(size=(4, 8)).astype("float32")
    model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0)

    flat_x, w, m = x.reshape(4, 36).astype("float64"), kernel.astype("float64"), 0.0
    for _ in range(2):  # the same steps, with the closed-form gradient
        residual = flat_x @ w.reshape(36, 8) - y
        g = (flat_x.T @ (2.0 * residual / residual.size)).reshape(kernel.shape)
        w = w - w * WD * LR
        m = MOMENTUM * m + g
        update = _newton_schulz((g + MOMENTUM * m).reshape(36, 8)) * LR * math.sqrt(36) * RMS_RATE
        w = w - update.reshape(kernel.shape)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model.get_layer("conv").kernel), w, rtol=1e-4, atol=1e-5
    )


def test_config_round_trip_and_saved_model_continue_identically(tmp_path):
    opt = _muon()
    clone = lw.FlattenedMuon.from_config(opt.get_config())
    assert clone.get_config() == opt.get_config()
    model, _ = _full_window_conv()
    model.compile(optimizer=_muon(), loss="mse")
    x = np.random.default_rng(4).normal(size=(4, 3, 3, 4)).astype("float32")
    y = np.zeros((4, 8), "float32")
    model.fit(x, y, batch_size=4, verbose=0)
    path = str(tmp_path / "flattened.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.optimizer) is lw.FlattenedMuon
    model.fit(x, y, batch_size=4, verbose=0)
    loaded.fit(x, y, batch_size=4, verbose=0)
    helpers.assert_weights_close(helpers.weights(loaded), helpers.weights(model))
