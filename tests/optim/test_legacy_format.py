"""Files saved by earlier engines load and continue identically.

`tests/fixtures/v1_<backend>.keras` were written by the engine of commit
a27f51e (see `tests/fixtures/make_v1_fixture.py`): rules, a scale changed
and a block unfrozen at runtime, saved in the middle of an accumulation
cycle with an EMA. Each is loaded on the running backend (files saved on
one backend load on the others) and trained for the same 7 micro-batches
the saving engine trained after saving; weights, averages and the step
count must reach what it reached.
"""

import pathlib

import keras
import numpy as np
import pytest

import layerwise as lw

FIXTURES = pathlib.Path(__file__).parents[1] / "fixtures"


def _continue_and_compare(model, expected):
    """Trains the loaded model on the saved continuation's data; weights,
    averages and the step count must reach what the saving engine reached."""
    opt = model.optimizer
    model.fit(expected["x"], expected["y"], batch_size=4, epochs=1, shuffle=False, verbose=0)
    assert int(keras.ops.convert_to_numpy(opt.iterations)) == int(expected["iterations"])
    for i, v in enumerate(model.weights):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(v), expected[f"weight_{i}"], rtol=1e-5, atol=1e-6,
            err_msg=v.path,
        )
    for i, (_, average) in enumerate(opt.ema_pairs()):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(average), expected[f"average_{i}"], rtol=1e-5, atol=1e-6,
        )


@pytest.mark.parametrize("saved_on", ["tensorflow", "jax", "torch"])
def test_format_1_file_loads_and_continues_identically(saved_on, jit_compile):
    expected = np.load(FIXTURES / f"v1_{saved_on}_expected.npz")
    model = keras.models.load_model(FIXTURES / f"v1_{saved_on}.keras")
    model.compile(optimizer=model.optimizer, loss="mse", jit_compile=jit_compile)
    opt = model.optimizer
    assert isinstance(opt, lw.LayerwiseOptimizer)
    assert opt.get_rule("body").lr_scale == pytest.approx(0.3)
    assert opt.get_rule("stem").frozen is False
    _continue_and_compare(model, expected)


@pytest.mark.parametrize("saved_on", ["tensorflow", "jax", "torch"])
def test_format_2_file_loads_and_continues_identically(saved_on, jit_compile):
    """`tests/fixtures/v2_<backend>.keras` were written by the engine of
    commit cb5de24, the last before the step became a pipeline of stages
    (see `tests/fixtures/make_v2_fixture.py`): a rule optimizer, gradient
    and update transforms, a projection, decay exclusions, the guard and
    diagnostics besides what format 1 had."""
    expected = np.load(FIXTURES / f"v2_{saved_on}_expected.npz")
    model = keras.models.load_model(FIXTURES / f"v2_{saved_on}.keras")
    model.compile(optimizer=model.optimizer, loss="mse", jit_compile=jit_compile)
    opt = model.optimizer
    assert opt.get_rule("body").lr_scale == pytest.approx(0.3)
    assert opt.get_rule("stem").frozen is False
    assert type(opt.optimizer_of(model.get_layer("head").kernel)).__name__ == "SGD"
    _continue_and_compare(model, expected)
    logged = opt.diagnostics()
    for key in expected.files:
        if key.startswith("log_"):
            assert logged[key[4:]] == pytest.approx(float(expected[key]), rel=1e-5, abs=1e-6), key
