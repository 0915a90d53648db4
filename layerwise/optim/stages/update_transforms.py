"""The update-transform stage: rules' `update=[...]` on the change each
group's optimizer computed.

An optimizer's update is only observable as the change of its variables.
So, for the variables of rules with update transforms and only for them,
this stage copies the weights after Keras' weight decay and before the
grouped update (on the way in: one transient copy per variable and real
step). On the way out, right after the update, it takes `update = new -
copy`, runs each rule's transforms in rule order on `(updates, grads,
weights, learning_rates)` and lands `copy + update`. A plan without such
rules makes no copy and adds no op.
"""

from keras import ops

from layerwise.optim import stage
from layerwise.optim import symbolic


class UpdateTransforms(stage.Stage):
    """Runs the rules' update transforms around the grouped update.

    Args:
        rules: The optimizer's (bound) rules.
    """

    name = "update_transforms"

    def __init__(self, rules):
        self.rules = rules

    def run(self, record, proceed):
        if not record.plan.update_steps:
            proceed(record)
            return
        pending = PendingUpdates(record, self.rules)
        proceed(record)
        pending.finish(record)

    def check(self, plan):
        """Runs every rule's transforms on symbolic tensors: a transform
        that returns another shape or dtype fails here, at build, before
        any state exists (in the step the optimizer's update has already
        landed when the transforms run)."""
        for rule_index, positions in plan.update_steps:
            rule = self.rules[rule_index]
            specs = [plan.trainable[p].variable for p in positions]
            updates = [symbolic.like(v) for v in specs]
            grads = [symbolic.like(v) for v in specs]
            weights = [symbolic.like(v) for v in specs]
            rates = [symbolic.scalar() for _ in specs]
            for transform in rule.update:
                what = f"An update transform of rule {rule.name!r} ({transform!r})"
                new = symbolic.call(transform, updates, grads, weights, rates)
                if new is not symbolic.UNKNOWN:
                    updates = symbolic.checked(new, updates, specs, what, "updates")


class PendingUpdates:
    """One step's copies and rates, between the way in and the way out.

    Args:
        record: The step's `StepRecord`, its groups' rates set.
        rules: The optimizer's (bound) rules.
    """

    def __init__(self, record, rules):
        self._rules = rules
        wanted = {p for _, members in record.plan.update_steps for p in members}
        self._copies = {}
        self._rates = {}
        for _, indices, learning_rate in record.groups:
            # One cast per group, not per variable and rule.
            rate = ops.cast(learning_rate, "float32")
            for i in indices:
                if record.positions[i] in wanted:
                    self._copies[i] = ops.copy(record.variables[i].value)
                    self._rates[i] = rate

    def finish(self, record):
        """Transforms the updates rule by rule and lands them."""
        if not self._copies:
            return
        grads, variables = record.grads, record.variables
        updates = {i: variables[i].value - copy for i, copy in self._copies.items()}
        for rule_index, members in record.plan.update_steps:
            idx = record.locate(members)
            if not idx:
                continue
            sub = [updates[i] for i in idx]
            rates = [self._rates[i] for i in idx]
            for transform in self._rules[rule_index].update:
                sub = list(
                    transform(sub, [grads[i] for i in idx], [self._copies[i] for i in idx], rates)
                )
            for i, u in zip(idx, sub):
                updates[i] = u
        for i, copy in self._copies.items():
            variables[i].assign(copy + updates[i])
