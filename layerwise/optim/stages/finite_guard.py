"""The non-finite guard: a step whose gradients hold NaN or Inf is skipped.

Skipped entirely: weights, slots, accumulators, averages and step counts
keep their values, and a counter records the skip. The check sees the raw
gradients of the non-frozen variables (after the sum over replicas, before
any transform).
"""

from keras import ops

from layerwise._internals import optimizers as internals


class FiniteGuard:
    """Skips non-finite steps when enabled; otherwise runs every step.

    Args:
        enabled: Whether to check (`skip_nonfinite`).
    """

    def __init__(self, enabled):
        self.enabled = enabled
        self.skipped_steps = None

    def create(self, add_scalar):
        """The skip counter (created with the wrapper, before build)."""
        if self.enabled:
            self.skipped_steps = add_scalar("skipped_steps", "int32")

    def run(self, grads, step, state):
        """Runs `step(grads)` unless a gradient is non-finite.

        Args:
            grads: The raw gradients.
            step: Callable `grads -> None`.
            state: Every variable `step` may read or write.
        """
        if not self.enabled:
            step(grads)
            return
        finite = ops.all(ops.stack([ops.all(ops.isfinite(g)) for g in grads] or [True]))
        internals.run_one_branch(
            finite,
            lambda: step(grads),
            lambda: self.skipped_steps.assign_add(1),
            state,
        )
