"""The grouped update: one call of each group's optimizer's own update.

Each update group (variables sharing one slot-holding optimizer, one set
of multiplier rules and one decay override) is updated by that
optimizer's update rule at the group's rate (`learning_rates`), in one
call, so on torch its fused multi-tensor kernels see the whole group.
Every optimizer called counts its step, except the inner one: its count
is the wrapper's step (`step_count`).
"""

from keras import ops

from layerwise._internals import optimizers as internals
from layerwise.optim import stage


class GroupedUpdate(stage.Stage):
    """In: every group updated.

    Args:
        updaters: The optimizer's `Updaters`.
    """

    name = "grouped_update"

    def __init__(self, updaters):
        self._updaters = updaters

    def run(self, record, proceed):
        grads, variables = record.grads, record.variables
        saved = self._saved_step_states(record.plan)
        called = set()
        for group, indices, learning_rate in record.groups:
            index = group.updater
            if index in saved and index in called:
                # Per-step state (Nadam's `_u_product`) must advance once per
                # step, not once per group: every group starts from the same
                # pre-step value, so the last group leaves it advanced once.
                for state, value in zip(self._updaters.step_states(index), saved[index]):
                    state.assign(value)
            internals.backend_update_step(
                self._updaters.updaters[index],
                [grads[i] for i in indices],
                [variables[i] for i in indices],
                learning_rate,
            )
            called.add(index)
        for index in sorted(called - {0}):
            internals.iterations_variable(self._updaters.updaters[index]).assign_add(1)
        proceed(record)

    def _saved_step_states(self, plan):
        saved = {}
        for updater, calls in plan.calls_per_updater.items():
            states = self._updaters.step_states(updater)
            if calls > 1 and states:
                saved[updater] = [ops.copy(ops.convert_to_tensor(s)) for s in states]
        return saved
