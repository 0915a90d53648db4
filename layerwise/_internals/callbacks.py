"""What Keras' `keras.callbacks.SwapEMAWeights` reads of an optimizer.

The callback takes `model.optimizer`, or its `inner_optimizer` when it has
one (it expects a `LossScaleOptimizer`), and zips that optimizer's private
`_trainable_variables` with its private `_model_variables_moving_average`,
which Keras' own `use_ema` creates at build. `LayerwiseOptimizer` keeps its
averages itself; it hands them to the callback under that name.
`tests/internals/test_callbacks.py` pins what the callback reads.
"""

# The attribute `SwapEMAWeights` swaps the optimizer's variables with.
AVERAGES_ATTRIBUTE = "_model_variables_moving_average"


def expose_averages(optimizer, averages):
    """Makes `averages` what `SwapEMAWeights` reads on `optimizer`.

    Set past the optimizer's `__setattr__`: Keras (and TensorFlow's
    checkpoints) would otherwise track the view as state of the optimizer.

    Args:
        optimizer: A Keras optimizer, built.
        averages: A sequence aligned with the variables it was built on.
    """
    object.__setattr__(optimizer, AVERAGES_ATTRIBUTE, averages)


def exposed_averages(optimizer):
    """What `expose_averages` set on `optimizer`, or `None`."""
    return vars(optimizer).get(AVERAGES_ATTRIBUTE)
