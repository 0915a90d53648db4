"""Fails loudly if Keras' `SwapEMAWeights` stops reading what
`layerwise/_internals/callbacks.py` hands it."""

import inspect

import keras

from layerwise._internals import callbacks as callback_internals


def test_swap_ema_weights_reads_the_averages_attribute_and_the_inner_optimizer():
    callback = keras.callbacks.SwapEMAWeights
    chooses = inspect.getsource(callback._apply_to_ema_optimizers)
    assert '"inner_optimizer"' in chooses
    assert callback_internals.AVERAGES_ATTRIBUTE in chooses
    for swap in (callback._backend_swap_variables, callback._tf_swap_variables):
        source = inspect.getsource(swap)
        assert "optimizer._trainable_variables" in source
        assert f"optimizer.{callback_internals.AVERAGES_ATTRIBUTE}" in source


def test_exposed_averages_are_not_state_of_the_optimizer():
    optimizer = keras.optimizers.SGD(0.1)
    optimizer.build([keras.Variable([1.0])])
    before = list(optimizer.variables)
    averages = [keras.Variable([0.0])]
    callback_internals.expose_averages(optimizer, averages)
    assert callback_internals.exposed_averages(optimizer) is averages
    assert getattr(optimizer, callback_internals.AVERAGES_ATTRIBUTE) is averages
    assert list(optimizer.variables) == before
