"""Where Keras' own training, callback and saving paths meet the wrapper.

Found by running Keras' trainer, callback and saving tests with every
optimizer wrapped (`tests/optim/peer/`, `docs/peer_suite.md`); each test
here pins one fix with the plain optimizer as the reference.
"""

import os

import keras
import numpy as np
import pytest

import layerwise as lw
from tests import helpers

_SCHEDULE_MESSAGE = "This optimizer was created with a `LearningRateSchedule`"


def test_model_without_trainable_weights_fits_with_a_strict_rule(jit_compile):
    """Keras builds the optimizer on no variable at all: no rule can match,
    so the strict check has nothing to say, as the plain optimizer fits."""
    def fit(optimizer):
        model = helpers.mlp()
        model.trainable = False
        model.compile(optimizer=optimizer, loss="mse", jit_compile=jit_compile)
        history = model.fit(*helpers.data(n=16), batch_size=8, verbose=0)
        return model, history.history["loss"]

    opt = lw.LayerwiseOptimizer(keras.optimizers.Adam(0.01), [lw.Rule(".*", lr_scale=0.5, name="all")])
    ours, our_loss = fit(opt)
    plain = keras.optimizers.Adam(0.01)
    theirs, their_loss = fit(plain)
    assert opt.built == plain.built  # TensorFlow builds neither
    assert int(opt.iterations) == int(plain.iterations)
    np.testing.assert_allclose(our_loss, their_loss, rtol=1e-6)
    helpers.assert_weights_close(helpers.weights(ours), helpers.weights(theirs), rtol=0, atol=0)


def test_strict_rule_matching_nothing_still_fails_on_variables():
    opt = lw.LayerwiseOptimizer(keras.optimizers.Adam(), [lw.Rule("nowhere/.*", name="n")])
    with pytest.raises(ValueError, match=r"Rules \['n'\] match no variable"):
        opt.build([keras.Variable(np.zeros(2, "float32"), name="w")])
    opt.build([])  # nothing to match: builds, as the plain optimizer
    assert opt.built


def test_legacy_h5_model_with_rules_loads(tmp_path):
    """Keras' h5 loader builds the optimizer on a Functional model's own
    (empty) variable list; the rules come back with the model, whose
    outputs are unchanged."""
    model = helpers.mlp()
    rules = [lw.Rule("l0/.*", lr_scale=0.5, name="body"), lw.Rule(".*", lr_scale=1.0, name="all")]
    model.compile(optimizer=lw.LayerwiseOptimizer(keras.optimizers.Adam(0.01), rules),
                  loss=keras.losses.MeanSquaredError())
    x, y = helpers.data(n=16)
    model.fit(x, y, batch_size=8, verbose=0)
    path = os.path.join(tmp_path, "model.h5")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.optimizer, lw.LayerwiseOptimizer)
    assert [r.name for r in loaded.optimizer.rules] == ["body", "all"]
    assert loaded.optimizer.get_rule("body").lr_scale == pytest.approx(0.5)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


@pytest.mark.parametrize("callback", ["scheduler", "reduce_on_plateau"])
@pytest.mark.parametrize("where", ["inner", "rule"])
def test_learning_rate_callbacks_on_a_schedule_raise_keras_message(callback, where):
    """Keras' `LearningRateScheduler` and `ReduceLROnPlateau` refuse an
    optimizer whose rate is a schedule with a `TypeError` whose first
    sentence code matches on; the wrapper's says the same (and which
    optimizer of the wrapper it is)."""
    schedule = keras.optimizers.schedules.PolynomialDecay(0.1, decay_steps=10)
    if where == "inner":
        opt = lw.LayerwiseOptimizer(keras.optimizers.Adam(schedule))
    else:
        opt = lw.LayerwiseOptimizer(
            keras.optimizers.Adam(0.01),
            [lw.Rule("l2/.*", optimizer=keras.optimizers.SGD(schedule, name="head_sgd"), name="head")],
        )
    if callback == "scheduler":
        cb = keras.callbacks.LearningRateScheduler(lambda epoch, lr: lr / 2)
    else:
        cb = keras.callbacks.ReduceLROnPlateau(monitor="loss", patience=0, min_delta=1e9)
    model = helpers.mlp()
    model.compile(optimizer=opt, loss="mse")
    with pytest.raises(TypeError, match=_SCHEDULE_MESSAGE) as error:
        model.fit(*helpers.data(n=16), batch_size=8, epochs=2, verbose=0, callbacks=[cb])
    if where == "rule":
        assert "'head_sgd'" in str(error.value)
