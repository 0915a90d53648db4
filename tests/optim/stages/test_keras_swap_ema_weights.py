"""Keras' `keras.callbacks.SwapEMAWeights` swaps the wrapper's averages.

Reference: the plain optimizer with Keras' own `use_ema`, same callback.
The callback looks at the inner optimizer of a model compiled with the
wrapper, at the wrapper under a `LossScaleOptimizer`; both see the
wrapper's averages (`layerwise/optim/swap_ema_view.py`). Where the
callback would see only some averages it raises, naming the alternatives.
"""

import os

import keras
import numpy as np
import pytest

import layerwise as lw
from tests import helpers


def _fit(optimizer, jit_compile, swap_on_epoch=False, checkpoint=None):
    model = helpers.mlp()
    model.compile(optimizer=optimizer, loss="mse", jit_compile=jit_compile)
    x, y = helpers.data(n=32)
    callbacks = [keras.callbacks.SwapEMAWeights(swap_on_epoch=swap_on_epoch)]
    if checkpoint is not None:
        callbacks.append(keras.callbacks.ModelCheckpoint(checkpoint))
    history = model.fit(
        x, y, batch_size=8, epochs=2, shuffle=False, verbose=0,
        validation_data=(x, y), callbacks=callbacks,
    )
    return model, history.history["val_loss"]


def _adam_with_ema():
    return keras.optimizers.Adam(0.01, use_ema=True, ema_momentum=0.7)


@pytest.mark.parametrize("build", ["wrapper", "loss_scale", "rules"])
def test_swap_equals_keras_use_ema(build, jit_compile):
    """Validation losses and final weights equal the plain optimizer's with
    Keras' own averages (taken over from `use_ema`, as `fit` ends by
    writing the averages into the weights)."""
    if build == "rules":
        optimizer = lw.LayerwiseOptimizer(
            _adam_with_ema(), [lw.Rule(".*", lr_scale=1.0, name="all")]
        )
    else:
        optimizer = lw.LayerwiseOptimizer(_adam_with_ema())
    if build == "loss_scale":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    ours, our_losses = _fit(optimizer, jit_compile)
    theirs, their_losses = _fit(_adam_with_ema(), jit_compile)
    np.testing.assert_allclose(our_losses, their_losses, rtol=1e-5)
    helpers.assert_weights_close(helpers.weights(ours), helpers.weights(theirs))


def test_swap_on_epoch_saves_the_averages(tmp_path):
    """`swap_on_epoch=True`: `ModelCheckpoint` saves the averaged weights,
    which are the weights `fit` ends with."""
    path = os.path.join(tmp_path, "ema.keras")
    model, _ = _fit(lw.LayerwiseOptimizer(_adam_with_ema()), False, True, path)
    saved = keras.saving.load_model(path)
    helpers.assert_weights_close(helpers.weights(saved), helpers.weights(model), rtol=0, atol=0)


def test_swap_of_the_wrappers_own_ema_equals_ema_weights(jit_compile):
    """`ema=` on the wrapper: the validation of the last epoch ran on the
    averages, the model trains on (and keeps) the raw weights."""
    model, losses = _fit(lw.LayerwiseOptimizer(keras.optimizers.Adam(0.01), ema=0.7), jit_compile)
    raw = helpers.weights(model)
    x, y = helpers.data(n=32)
    with lw.ema_weights(model):
        averaged = model.evaluate(x, y, batch_size=8, verbose=0)
    np.testing.assert_allclose(losses[-1], averaged, rtol=1e-5)
    helpers.assert_weights_close(helpers.weights(model), raw, rtol=0, atol=0)


def test_swap_refuses_averages_it_cannot_see():
    """A rule's own optimizer holds some variables: the callback, reading
    the inner optimizer, would swap only some weights. It raises instead,
    before swapping anything."""
    optimizer = lw.LayerwiseOptimizer(
        keras.optimizers.Adam(0.01),
        [lw.Rule("l2/.*", optimizer=keras.optimizers.SGD(0.1), name="head")],
        ema=0.7,
    )
    with pytest.raises(ValueError, match="EvaluateWithEMA") as error:
        _fit(optimizer, False)
    assert "'l2/kernel', 'l2/bias'" in str(error.value)


def test_swap_refuses_frozen_variables_under_loss_scaling():
    """Under a `LossScaleOptimizer` the callback reads the wrapper, built
    on frozen variables too, which have no average."""
    optimizer = keras.optimizers.LossScaleOptimizer(
        lw.LayerwiseOptimizer(
            keras.optimizers.Adam(0.01), [lw.Rule("l0/.*", frozen=True, name="l0")], ema=0.7
        )
    )
    with pytest.raises(ValueError, match=r"without an average \(frozen\)"):
        _fit(optimizer, False)


def test_without_ema_keras_error_stands():
    with pytest.raises(ValueError, match="SwapEMAWeights must be used"):
        _fit(lw.LayerwiseOptimizer(keras.optimizers.Adam(0.01)), False)
