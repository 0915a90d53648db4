"""Swapping the EMA weights into a model: `ema_weights(model)`.

`layerwise.callbacks.EvaluateWithEMA` does it for validation in `fit`.
"""

import contextlib

from keras import ops

from layerwise.optim import optimizer as optimizer_lib


def _averages(model):
    optimizer = optimizer_lib.layerwise_optimizer_of(model)
    if optimizer.ema is None:
        raise ValueError(
            "The model's LayerwiseOptimizer must keep an EMA of the weights: "
            "create it with `ema=<momentum>` (or an inner optimizer with "
            f"`use_ema=True`). Received: ema={optimizer.ema!r}"
        )
    if not optimizer.built:
        raise ValueError(
            "The optimizer is not built yet, so there are no averages: train "
            "first (or call `optimizer.build(model.trainable_variables)`)."
        )
    if int(ops.convert_to_numpy(optimizer.iterations)) == 0:
        raise ValueError(
            "The averages start at the first optimizer step, and the "
            "optimizer has not taken one yet: train first."
        )
    return optimizer.ema_pairs()


@contextlib.contextmanager
def ema_weights(model):
    """Swaps the EMA weights into `model` for the duration of a block.

    Inside the block the model's variables hold their moving averages
    (frozen variables keep their value); on exit, also on an exception, they
    get back their exact previous values (bit for bit). Use it to evaluate,
    predict or save with the averaged weights while training continues on
    the raw ones.

    Args:
        model: A model compiled with a `LayerwiseOptimizer` that has `ema`.

    Example:

    >>> import keras, numpy as np, layerwise as lw
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> opt = lw.LayerwiseOptimizer(keras.optimizers.SGD(0.1), ema=0.9)
    >>> model.compile(optimizer=opt, loss="mse")
    >>> _ = model.fit(np.ones((4, 2)), np.ones((4, 1)), epochs=3, verbose=0)
    >>> raw = model.get_weights()
    >>> with lw.ema_weights(model):
    ...     averaged = model.get_weights()
    >>> all((a == b).all() for a, b in zip(model.get_weights(), raw))
    True
    """
    pairs = _averages(model)
    saved = [(v, ops.copy(v.value)) for v, _ in pairs]
    try:
        for variable, average in pairs:
            variable.assign(ops.copy(average.value))
        yield model
    finally:
        for variable, value in saved:
            variable.assign(value)


