"""`LayerwiseOptimizer`'s options as one validated object: checked before
anything changes, written into and read from the config in one place,
readable (and not silently settable) on the optimizer."""

import dataclasses

import keras
import pytest

import layerwise as lw
from layerwise.optim import options as options_lib


def _hook(grads, variables):
    return grads


keras.saving.register_keras_serializable(package="layerwise_test_options")(_hook)


def test_options_round_trip_through_the_config():
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.Adam(0.1), gradient_hook=_hook, strict=False, accumulate_steps=3,
        ema=0.99, ema_bias_correction=True, ema_overwrite_at_end=True,
        ema_overwrite_frequency=5, skip_nonfinite=True, skip_frozen_gradients=False,
        log=["lr", "grad_norm"],
    )
    restored = lw.LayerwiseOptimizer.from_config(opt.get_config())
    assert restored.options == opt.options
    assert restored.options == options_lib.Options(
        gradient_hook=_hook, strict=False, accumulate_steps=3, ema=0.99,
        ema_bias_correction=True, ema_overwrite_at_end=True, ema_overwrite_frequency=5,
        skip_nonfinite=True, skip_frozen_gradients=False, log=("lr", "grad_norm"),
    )


def test_every_option_is_in_the_config_and_readable_on_the_optimizer():
    opt = lw.LayerwiseOptimizer(keras.optimizers.SGD(0.1), accumulate_steps=2, log="lr")
    config = opt.get_config()
    for field in dataclasses.fields(options_lib.Options):
        assert field.name in config
        assert getattr(opt, field.name) == getattr(opt.options, field.name)
    assert opt.accumulate_steps == 2 and opt.log == ("lr",)


def test_setting_an_option_after_creation_is_refused_not_ignored():
    opt = lw.LayerwiseOptimizer(keras.optimizers.SGD(0.1))
    with pytest.raises(AttributeError, match="`ema` is fixed when the optimizer is created"):
        opt.ema = 0.9
    assert opt.ema is None


def test_a_bad_option_changes_nothing_on_the_inner_optimizer():
    inner = keras.optimizers.Adam(0.1, use_ema=True, gradient_accumulation_steps=2)
    with pytest.raises(ValueError, match="`log` must be a tuple"):
        lw.LayerwiseOptimizer(inner, log=("loss",))
    assert inner.use_ema and inner.gradient_accumulation_steps == 2
    opt = lw.LayerwiseOptimizer(inner)
    assert (opt.accumulate_steps, opt.ema, opt.ema_overwrite_at_end) == (2, 0.99, True)
    assert not inner.use_ema and inner.gradient_accumulation_steps is None


def test_options_from_an_older_config_take_their_defaults():
    config = lw.LayerwiseOptimizer(keras.optimizers.SGD(0.1)).get_config()
    for name in ("log", "ema_overwrite_frequency", "skip_frozen_gradients"):
        del config[name]
    restored = lw.LayerwiseOptimizer.from_config(config)
    assert restored.options == options_lib.Options()
