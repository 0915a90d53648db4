"""The non-finite guard: a step whose gradients hold NaN or Inf is skipped.

Skipped entirely: weights, slots, accumulators, averages and step counts
keep their values, and a counter records the skip. The check sees the raw
gradients of the non-frozen variables (after the sum over replicas, before
any transform).
"""

from keras import ops

from layerwise._internals import optimizers as internals
from layerwise.optim import stage
from layerwise.optim.stages import cross_replica


class FiniteGuard(stage.Stage):
    """Skips non-finite steps when enabled.

    In: the rest of the step runs only if every gradient is finite; else
    the skip counter advances.

    Args:
        enabled: Whether to check (`skip_nonfinite`).
    """

    name = "finite_guard"

    def __init__(self, enabled):
        self._enabled = enabled
        self.skipped_steps = None

    @property
    def enabled(self):
        return self._enabled

    def create(self, state):
        """The skip counter (created with the wrapper, before build)."""
        if self.enabled:
            self.skipped_steps = state.scalar("skipped_steps", "int32")

    @property
    def variables(self):
        return [self.skipped_steps] if self.enabled else []

    def run(self, record, proceed):
        cross_replica.refuse_conditional(record, "skip_nonfinite=True")
        finite = ops.all(ops.stack([ops.all(ops.isfinite(g)) for g in record.grads] or [True]))
        internals.run_one_branch(
            finite,
            lambda: proceed(record),
            lambda: self.skipped_steps.assign_add(1),
            record.branch_state(),
        )

    def describe(self):
        return "skip_nonfinite=True"
