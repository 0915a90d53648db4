"""The exponential moving average of the weights.

One average per non-frozen variable, updated once per real optimizer step
(never on accumulation micro-steps), after the update. Swapping the
averages into the model: `layerwise.ema_weights`.
"""

from keras import ops

from layerwise import _validation


class MovingAverage:
    """Averages of the weights, the EMA stage of `LayerwiseOptimizer`.

    Args:
        momentum: The EMA momentum `m`, or `None` to turn the stage off.
        bias_correction: Whether to debias (optax's `ema(debias=True)`).
        key: Callable `variable -> hashable`, how the wrapper identifies
            a variable.
        overwrite_frequency: Optional int `f`: every `f` steps the weights
            are overwritten by their averages (Keras'
            `ema_overwrite_frequency`).
    """

    def __init__(self, momentum, bias_correction, key, overwrite_frequency=None):
        self.momentum = momentum
        self.bias_correction = bias_correction
        self.overwrite_frequency = overwrite_frequency
        self._key = key
        self._averages = {}

    @property
    def enabled(self):
        return self.momentum is not None

    def build(self, add_slot, variables):
        self.add(add_slot, variables)

    def add(self, add_slot, variables, at_runtime=False):
        """Averages for `variables`. At build they start as zeros (the first
        step copies the weights, as Keras' `use_ema` does, which also works
        inside a traced step); for variables that were frozen until now
        (`at_runtime`) the average starts at the variable's value."""
        if not self.enabled:
            return
        for variable in variables:
            average = add_slot(variable, "average")
            if at_runtime:
                # A copy: two JAX variables must not share one buffer.
                average.assign(ops.copy(variable.value))
            self._averages[self._key(variable)] = average

    def average(self, variable):
        return self._averages[self._key(variable)]

    def has_average(self, variable):
        return self._key(variable) in self._averages

    def update(self, variables, step):
        """One EMA step after the update.

        Without bias correction (Keras' `use_ema` formula) the first step
        copies the weights and later steps compute
        `a <- m * a + (1 - m) * w`. With bias correction the average is the
        debiased estimate of optax's `ema(debias=True)`: the raw average
        `r_t = m * r_{t-1} + (1 - m) * w_t` (from `r_0 = 0`) divided by
        `1 - m**t`, kept in debiased form, so
        `a_t = (m * a_{t-1} * (1 - m**(t-1)) + (1 - m) * w_t) / (1 - m**t)`.

        Args:
            variables: The variables updated this step.
            step: The step count before this step; `t = step + 1`.
        """
        if not self.enabled:
            return
        for variable in variables:
            average = self.average(variable)
            dtype = average.dtype
            m = ops.cast(self.momentum, dtype)
            w = ops.cast(variable.value, dtype)
            if self.bias_correction:
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
        if self.overwrite_frequency:
            # A select rather than a conditional: no branch to keep pure on
            # JAX, and one pass over the weights either way.
            due = ops.equal(ops.mod(ops.add(step, 1), self.overwrite_frequency), 0)
            for variable in variables:
                average = self.average(variable)
                variable.assign(
                    ops.where(due, ops.cast(average.value, variable.dtype), variable.value)
                )


def check_momentum(value):
    """`ema` as a float in [0, 1), or `None`."""
    if value is None:
        return None
    if not _validation.is_real_number(value) or not 0 <= value < 1:
        raise ValueError(
            f"`ema` must be a momentum in [0, 1), or None. Received: ema={value!r}"
        )
    return float(value)


def check_overwrite_frequency(value, has_ema):
    """`ema_overwrite_frequency` as an int >= 1, or `None`."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            "`ema_overwrite_frequency` must be an int >= 1, or None. Received: "
            f"ema_overwrite_frequency={value!r}"
        )
    if not has_ema:
        raise ValueError(
            "`ema_overwrite_frequency` needs an EMA: set `ema` too. Received: "
            f"ema_overwrite_frequency={value!r}, ema=None"
        )
    return value
