"""Gradient accumulation: k micro-batches, one real optimizer step.

The accumulated mean `(g_1 + ... + g_k) / k` is exactly the gradient of a
k times larger batch under a mean-reduced loss, so everything downstream
(transforms, clipping, decay, the update, the step count, EMA) runs once per
real step on that gradient, as for the large batch.
"""

import contextlib

from keras import ops

from layerwise._internals import optimizers as internals
from layerwise.optim import stage
from layerwise.optim.stages import cross_replica


class Accumulation(stage.Stage):
    """One accumulator per non-frozen variable and a micro-step counter.

    In: a micro-step adds the gradients to the accumulators and ends the
    step there; the real step (every `steps`-th) goes on with their mean.

    Args:
        steps: Micro-batches per real step (`k`); 1: no accumulation.
        key: Callable `variable -> hashable`, how the wrapper identifies
            a variable.
    """

    name = "accumulation"

    def __init__(self, steps, key):
        self.steps = steps
        self._key = key
        self.micro_step = None
        self._accumulators = {}
        self._order = []  # the accumulators, in creation order
        # `None`: decide at run time; "micro"/"real": traced as that phase.
        self._phase = None

    @property
    def accumulating(self):
        """Whether micro-batches accumulate (`steps > 1`). The stage runs
        either way: it also writes the variables Keras overwrites with
        their gradient."""
        return self.steps > 1

    def build(self, state, variables):
        """Creates the counter and the accumulators of `variables`."""
        if not self.accumulating:
            return
        self.micro_step = state.scalar("micro_step", "int32")
        self.add(state, variables)

    def add(self, state, variables):
        """Accumulators for variables that became trainable."""
        if not self.accumulating:
            return
        for variable in variables:
            accumulator = state.slot(variable, "accumulator")
            self._accumulators[self._key(variable)] = accumulator
            self._order.append(accumulator)

    @property
    def variables(self):
        if self.micro_step is None:
            return []
        return [self.micro_step] + self._order

    @property
    def keeps_per_variable_state(self):
        return self.accumulating

    def describe(self):
        return f"accumulate_steps={self.steps}" if self.accumulating else None

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
        return self.accumulating and self._phase is None

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

    def run(self, record, proceed):
        """Adds the gradients to the accumulators, or takes the real step.

        Variables Keras overwrites with their gradient
        (`record.overwrites`) are, as in Keras, written at once without
        accumulation; with it, their accumulator keeps the elementwise
        maximum over the cycle and the real step writes it.
        """
        grads, variables, overwrites = record.grads, record.variables, record.overwrites
        if not self.accumulating:
            for grad, variable in overwrites:
                variable.assign(ops.cast(grad, variable.dtype))
            proceed(record)
            return
        if self._phase is None:
            cross_replica.refuse_conditional(record, f"accumulate_steps={self.steps}")
        state = record.branch_state()

        def real_step(mean):
            record.grads = mean
            proceed(record)

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
