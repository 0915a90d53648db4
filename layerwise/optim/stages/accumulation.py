"""Gradient accumulation: k micro-batches, one real optimizer step.

The accumulated mean `(g_1 + ... + g_k) / k` is exactly the gradient of a
k times larger batch under a mean-reduced loss, so everything downstream
(transforms, clipping, decay, the update, the step count, EMA) runs once per
real step on that gradient, as for the large batch.
"""

from keras import ops

from layerwise._internals import optimizers as internals


def accumulate_or_update(micro_step, steps, accumulators, grads, update, state, phase=None):
    """Adds `grads` to the accumulators, or takes the real step.

    Args:
        micro_step: Integer variable, micro-steps taken in this cycle.
        steps: Micro-batches per real step (`k`).
        accumulators: One variable per gradient, the running sum.
        grads: This micro-batch's gradients.
        update: Callable `mean_grads -> None`, the real step.
        state: Every variable `update` may read or write (needed where the
            branch must be a pure function, on JAX).
        phase: `None` to decide at run time from `micro_step` (a
            conditional in compiled code); `"micro"` or `"real"` when the
            caller knows which step this is, so only that branch is traced
            (see `layerwise.callbacks.SplitAccumulation`).
    """

    def real_step():
        mean = [
            ops.divide(ops.add(a.value, ops.cast(g, a.dtype)), ops.cast(steps, a.dtype))
            for a, g in zip(accumulators, grads)
        ]
        update(mean)
        for a in accumulators:
            a.assign(ops.zeros_like(a.value))

    def micro():
        internals.add_to(accumulators, grads)

    if phase == "micro":
        micro()
    elif phase == "real":
        real_step()
    else:
        is_real = ops.equal(micro_step, steps - 1)
        internals.run_one_branch(
            is_real, real_step, micro, list(state) + list(accumulators)
        )
    micro_step.assign(ops.mod(ops.add(micro_step, 1), steps))
