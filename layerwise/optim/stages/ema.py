"""The exponential moving average of the weights: its update formula.

`LayerwiseOptimizer(..., ema=momentum)` keeps one average per non-frozen
variable, updated once per real optimizer step (never on accumulation
micro-steps). Swapping the averages in: `layerwise.optim.ema_swap`.
"""

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
