"""Exponential moving average of the weights, and swapping it in.

`LayerwiseOptimizer(..., ema=momentum)` keeps one average per non-frozen
variable, updated once per real optimizer step (never on accumulation
micro-steps). `ema_weights(model)` swaps them in for a block of code;
`layerwise.callbacks.EvaluateWithEMA` does it for validation in `fit`.
"""

import contextlib

import keras
from keras import ops


def update_averages(pairs, momentum, step, bias_correction):
    """One EMA step for `(variable, average)` pairs, after the update.

    Without bias correction (Keras' `use_ema` formula) the first step copies
    the weights and later steps compute `a <- m * a + (1 - m) * w`. Before
    the first step the averages are zeros, as Keras' are. With bias
    correction the average is the debiased estimate of optax's
    `ema(debias=True)`: the raw average `r_t = m * r_{t-1} + (1 - m) * w_t`
    (from `r_0 = 0`) divided by `1 - m**t`, kept in debiased form, so
    `a_t = (m * a_{t-1} * (1 - m**(t-1)) + (1 - m) * w_t) / (1 - m**t)`.

    Args:
        pairs: `(variable, average)` pairs.
        momentum: The EMA momentum `m`.
        step: The optimizer's step count before this step (an integer
            tensor or variable); `t = step + 1`.
        bias_correction: Whether to debias.
    """
    for variable, average in pairs:
        dtype = average.dtype
        m = ops.cast(momentum, dtype)
        w = ops.cast(variable.value, dtype)
        if bias_correction:
            t = ops.cast(ops.add(step, 1), dtype)
            previous = ops.subtract(1.0, ops.power(m, ops.subtract(t, 1.0)))
            raw = ops.add(
                ops.multiply(ops.multiply(m, average.value), previous),
                ops.multiply(ops.subtract(1.0, m), w),
            )
            average.assign(ops.divide(raw, ops.subtract(1.0, ops.power(m, t))))
        else:
            m = ops.multiply(ops.cast(ops.not_equal(step, 0), dtype), m)
            average.assign(
                ops.add(ops.multiply(m, average.value), ops.multiply(ops.subtract(1.0, m), w))
            )


def _averages(model):
    from layerwise import callbacks as callbacks_lib

    optimizer = callbacks_lib.layerwise_optimizer_of(model)
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


