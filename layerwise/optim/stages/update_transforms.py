"""The update-transform stage: rules' `update=[...]` on the change each
group's optimizer computed.

An optimizer's update is only observable as the change of its variables.
So, for the variables of rules with update transforms and only for them,
the grouped update hands this stage each group's weights after Keras'
weight decay and right before the optimizer's update call (`capture`: one
transient copy per variable and real step). After every group ran,
`finish` takes `update = new - copy`, runs each rule's transforms in rule
order on `(updates, grads, weights, learning_rates)` and lands `copy +
update`. A step without such rules makes no copy and adds no op.
"""

from keras import ops

from layerwise.optim import symbolic


class UpdateTransforms:
    """Runs the rules' update transforms around the grouped update.

    Args:
        rules: The optimizer's (bound) rules.
    """

    def __init__(self, rules):
        self.rules = rules

    def start(self, plan, positions):
        """This step's pending updates, or `None` when the plan has no
        update transforms (then nothing else of this stage runs).

        Args:
            plan: The optimizer's `Plan`.
            positions: Each variable's position in `plan.trainable`.
        """
        if not plan.update_steps:
            return None
        return PendingUpdates(plan, positions, self.rules)

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
    """One step's copies and rates, between `capture` and `finish`."""

    def __init__(self, plan, positions, rules):
        self._plan = plan
        self._rules = rules
        self._index_of = {p: i for i, p in enumerate(positions)}
        wanted = {p for _, members in plan.update_steps for p in members}
        self._wanted = {i for p, i in self._index_of.items() if p in wanted}
        self._copies = {}
        self._rates = {}

    def capture(self, indices, variables, learning_rate):
        """Called per group before its optimizer's update call.

        Args:
            indices: The group's indices into `variables`.
            variables: The step's variables.
            learning_rate: The group's effective learning rate.
        """
        for i in indices:
            if i in self._wanted:
                self._copies[i] = ops.copy(variables[i].value)
                self._rates[i] = learning_rate

    def finish(self, grads, variables):
        """Transforms the updates rule by rule and lands them."""
        if not self._copies:
            return
        updates = {i: variables[i].value - copy for i, copy in self._copies.items()}
        for rule_index, members in self._plan.update_steps:
            idx = [self._index_of[p] for p in members if p in self._index_of]
            if not idx:
                continue
            sub = [updates[i] for i in idx]
            rates = [ops.cast(self._rates[i], "float32") for i in idx]
            for transform in self._rules[rule_index].update:
                sub = list(
                    transform(sub, [grads[i] for i in idx], [self._copies[i] for i in idx], rates)
                )
            for i, u in zip(idx, sub):
                updates[i] = u
        for i, copy in self._copies.items():
            variables[i].assign(copy + updates[i])
