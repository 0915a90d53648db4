"""The exponential moving average of the weights.

One average per non-frozen variable, updated once per real optimizer step
(never on accumulation micro-steps), after the update. Swapping the
averages into the model: `layerwise.ema_weights`.
"""

from keras import ops

from layerwise.optim import stage


class MovingAverage(stage.Stage):
    """Averages of the weights, the EMA stage of `LayerwiseOptimizer`.

    Out: after the update, constraints and projections, one EMA step of
    the variables updated (see `update`).

    Args:
        momentum: The EMA momentum `m`, or `None` to turn the stage off.
        bias_correction: Whether to debias (optax's `ema(debias=True)`).
        key: Callable `variable -> hashable`, how the wrapper identifies
            a variable.
        overwrite_frequency: Optional int `f`: every `f` steps the weights
            are overwritten by their averages (Keras'
            `ema_overwrite_frequency`).
    """

    name = "moving_average"

    def __init__(self, momentum, bias_correction, key, overwrite_frequency=None):
        self.momentum = momentum
        self.bias_correction = bias_correction
        self.overwrite_frequency = overwrite_frequency
        self._key = key
        self._averages = {}
        self._order = []  # the averages, in creation order

    @property
    def enabled(self):
        return self.momentum is not None

    def build(self, state, variables):
        """Averages for `variables`, starting as zeros: the first step
        copies the weights, as Keras' `use_ema` does (which also works
        inside a traced step)."""
        self._add(state, variables, at_runtime=False)

    def add(self, state, variables):
        """Averages for variables that were frozen until now, starting at
        the variable's value."""
        self._add(state, variables, at_runtime=True)

    def _add(self, state, variables, at_runtime):
        if not self.enabled:
            return
        for variable in variables:
            average = state.slot(variable, "average")
            if at_runtime:
                # A copy: two JAX variables must not share one buffer.
                average.assign(ops.copy(variable.value))
            self._averages[self._key(variable)] = average
            self._order.append(average)

    @property
    def variables(self):
        return list(self._order)

    @property
    def keeps_per_variable_state(self):
        return True

    def describe(self):
        return f"ema={self.momentum}"

    def run(self, record, proceed):
        proceed(record)
        self.update(record.variables, record.step)

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
