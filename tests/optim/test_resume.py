"""Exact resume: killed mid-epoch and restarted with Keras'
`BackupAndRestore`, the run equals an uninterrupted one (runtime-changed
scale, warm-up schedule mid-way, accumulation, EMA)."""

import keras
import numpy as np
import pytest

import layerwise as lw
from tests import helpers


class _Kill(keras.callbacks.Callback):
    """Simulates a crash at a given epoch and batch."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.at = (epoch, batch)
        self.epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            raise RuntimeError("killed")


class _ChangeScale(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            self.model.optimizer.set_lr_scale("body", 0.25)


def _fresh(jit_compile):
    model = helpers.mlp()
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.Adam(0.01),
        [
            lw.Rule(model.get_layer("l0"), lr_scale=0.5, name="body"),
            lw.Rule(model.get_layer("l1"), lr_scale=lw.warmup(1.0, 6), name="warm"),
        ],
        accumulate_steps=3,
        ema=0.5,
    )
    model.compile(optimizer=opt, loss="mse", jit_compile=jit_compile)
    return model


def _fit(model, callbacks):
    x, y = helpers.data(n=64)
    model.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0,
              callbacks=[_ChangeScale()] + callbacks)


def test_backup_and_restore_after_a_crash_equals_an_uninterrupted_run(tmp_path, jit_compile):
    uninterrupted = _fresh(jit_compile)
    _fit(uninterrupted, [])
    backup = str(tmp_path / "backup")
    crashed = _fresh(jit_compile)
    with pytest.raises(RuntimeError, match="killed"):
        _fit(crashed, [keras.callbacks.BackupAndRestore(backup), _Kill(epoch=2, batch=2)])
    keras.backend.clear_session()
    restarted = _fresh(jit_compile)  # a new process would build the same objects
    _fit(restarted, [keras.callbacks.BackupAndRestore(backup)])
    helpers.assert_weights_close(helpers.weights(restarted), helpers.weights(uninterrupted), rtol=1e-6, atol=1e-7)
    for (_, a), (_, b) in zip(restarted.optimizer.ema_pairs(), uninterrupted.optimizer.ema_pairs()):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), rtol=1e-6, atol=1e-7)
    assert restarted.optimizer.get_rule("body").lr_scale == 0.25
    assert int(restarted.optimizer.iterations) == int(uninterrupted.optimizer.iterations) == 4
