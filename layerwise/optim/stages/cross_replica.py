"""The sum over `tf.distribute` replicas, before any other stage.

Keras' TensorFlow optimizers all-reduce inside their update, after
clipping. Here the gradients are summed first, so that the guard, the
accumulation, the hook, the rule transforms and the clipping see the
global gradient, as on one device; the optimizers are told not to sum
again (`Updaters`). Other backends (and one replica) pass through.
"""

from layerwise._internals import optimizers as internals
from layerwise.optim import stage


class CrossReplica(stage.Stage):
    """In: the gradients summed over replicas (`record.reduced` says so)."""

    name = "cross_replica"

    def run(self, record, proceed):
        record.grads, record.reduced = internals.all_reduce_across_replicas(record.grads)
        proceed(record)


def refuse_conditional(record, setting):
    """Refuses a run-time conditional around the rest of the step once
    replicas were summed: TensorFlow cannot synchronize replicas inside it.

    Args:
        record: The step's `StepRecord`.
        setting: The option that asks for the conditional, as `name=value`.
    """
    if not record.reduced:
        return
    raise ValueError(
        "`skip_nonfinite` and `accumulate_steps` are not supported "
        "under a tf.distribute strategy with several replicas: "
        "TensorFlow cannot synchronize replicas inside the "
        "conditional they need. Use them on one device, with "
        "the JAX backend's `keras.distribution`, or, for "
        "`accumulate_steps`, with the callback "
        "`layerwise.callbacks.SplitAccumulation()` (no "
        f"conditional). Received: {setting}"
    )
