"""Gradient accumulation: k micro-batches, one real optimizer step.

The accumulated mean `(g_1 + ... + g_k) / k` is exactly the gradient of a
k times larger batch under a mean-reduced loss, so everything downstream
(transforms, clipping, decay, the update, the step count, EMA) runs once per
real step on that gradient, as for the large batch.
"""

import contextlib

from keras import ops

from layerwise._internals import optimizers as internals


class Accumulation:
    """One accumulator per non-frozen variable and a micro-step counter.

    Args:
        steps: Micro-batches per real step (`k`); 1 turns the stage off.
        key: Callable `variable -> hashable`, how the wrapper identifies
            a variable.
    """

    def __init__(self, steps, key):
        self.steps = steps
        self._key = key
        self.micro_step = None
        self._accumulators = {}
        # `None`: decide at run time; "micro"/"real": traced as that phase.
        self._phase = None

    @property
    def enabled(self):
        return self.steps > 1

    def build(self, add_scalar, add_slot, variables):
        """Creates the counter and the accumulators of `variables`."""
        if not self.enabled:
            return
        self.micro_step = add_scalar("micro_step", "int32")
        self.add(add_slot, variables)

    def add(self, add_slot, variables):
        """Accumulators for variables that became trainable."""
        if not self.enabled:
            return
        for variable in variables:
            self._accumulators[self._key(variable)] = add_slot(variable, "accumulator")

    def accumulator(self, variable):
        return self._accumulators[self._key(variable)]

    def micro_steps_taken(self):
        """Micro-steps taken in the current cycle (0 before building)."""
        if self.micro_step is None:
            return 0
        return int(ops.convert_to_numpy(self.micro_step))

    def conditional(self):
        """Whether the next traced step decides at run time which kind of
        step it is (a conditional in compiled code)."""
        return self.enabled and self._phase is None

    @contextlib.contextmanager
    def traced_as(self, phase):
        """Traces (or runs) the steps inside as micro-steps (`"micro"`) or
        real steps (`"real"`), without the run-time conditional; for
        `layerwise.callbacks.SplitAccumulation`, which knows which step each
        batch is."""
        previous, self._phase = self._phase, phase
        try:
            yield
        finally:
            self._phase = previous

    def run(self, grads, variables, real_step, state, overwrites=()):
        """Adds `grads` to the accumulators, or takes the real step.

        Args:
            grads: This micro-batch's gradients.
            variables: The matching variables.
            real_step: Callable `mean_grads -> None`, the real step.
            state: Every variable `real_step` may read or write (needed
                where a branch must be a pure function, on JAX).
            overwrites: `(gradient, variable)` pairs of variables Keras
                overwrites with their gradient. As in Keras: at once without
                accumulation; with it, the accumulator keeps the elementwise
                maximum over the cycle and the real step writes it.
        """
        if not self.enabled:
            for grad, variable in overwrites:
                variable.assign(ops.cast(grad, variable.dtype))
            real_step(grads)
            return
        accumulators = [self.accumulator(v) for v in variables]
        maxima = [(g, v, self.accumulator(v)) for g, v in overwrites]

        def real():
            steps = self.steps
            mean = [
                ops.divide(ops.add(a.value, ops.cast(g, a.dtype)), ops.cast(steps, a.dtype))
                for a, g in zip(accumulators, grads)
            ]
            for grad, variable, maximum in maxima:
                variable.assign(ops.maximum(ops.cast(grad, maximum.dtype), maximum.value))
                maximum.assign(ops.zeros_like(maximum.value))
            real_step(mean)
            for a in accumulators:
                a.assign(ops.zeros_like(a.value))

        def micro():
            internals.add_to(accumulators, grads)
            for grad, _, maximum in maxima:
                maximum.assign(ops.maximum(ops.cast(grad, maximum.dtype), maximum.value))

        if self._phase == "micro":
            micro()
        elif self._phase == "real":
            real()
        else:
            is_real = ops.equal(self.micro_step, self.steps - 1)
            internals.run_one_branch(
                is_real, real, micro, list(state) + accumulators + [m for _, _, m in maxima]
            )
        self.micro_step.assign(ops.mod(ops.add(self.micro_step, 1), self.steps))


def check_steps(value):
    """`accumulate_steps` as an int >= 1 (`None` means 1)."""
    if value is None:
        return 1
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            "`accumulate_steps` must be an int >= 1 (1: no accumulation). "
            f"Received: accumulate_steps={value!r}"
        )
    return value


