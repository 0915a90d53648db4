"""Per-rule diagnostics computed at every real step (`log=`).

For each rule, over its non-frozen variables: `"lr"` (the learning rate of
the rule's optimizer times the rule's multiplier), `"grad_norm"` (L2 norm of
the processed gradients, as the update sees them), `"update_norm"` (L2
norm of the step's weight change: after the rules' update transforms,
constraints and projections) and `"update_ratio"` (that norm over the norm
of the weights before the step).
They are written into float32 optimizer variables, read with
`LayerwiseOptimizer.diagnostics()` or in `fit`'s logs with
`layerwise.callbacks.LogDiagnostics`.
"""

import keras
from keras import ops

from layerwise import _validation
from layerwise._internals import optimizers as internals
from layerwise.optim import plan as plan_lib
from layerwise.optim import stage

class Diagnostics(stage.Stage):
    """The log variables and what fills them.

    In: a copy of the weights, when a statistic needs the change. Out:
    after the update, constraints and projections, the statistics.

    Args:
        stats: Names among `layerwise.optim.options.STATS`; empty turns the
            stage off.
        rules: The wrapper's bound rules.
        optimizer_of_rule: Per rule, the index of the optimizer it sets,
            or `None`.
        updaters: The wrapper's `Updaters` (their current rates).
    """

    name = "diagnostics"

    def __init__(self, stats, rules, optimizer_of_rule, updaters):
        self.stats = stats
        self.rules = rules
        self._optimizer_of_rule = optimizer_of_rule
        self._updaters = updaters
        self.log_variables = {}

    @property
    def enabled(self):
        return bool(self.stats)

    def create(self, state):
        self.log_variables = {
            f"{stat}/{rule.name}": state.scalar(
                f"log_{stat}_{_validation.variable_name(rule.name)}"
            )
            for stat in self.stats
            for rule in self.rules
        }

    @property
    def variables(self):
        return list(self.log_variables.values())

    def describe(self):
        return f"log={list(self.stats)}"

    def run(self, record, proceed):
        before = self.snapshot(record.variables)
        proceed(record)
        self.write(record, before)

    def snapshot(self, variables):
        """The weights before the update, if `update_ratio` or
        `update_norm` needs them."""
        if "update_ratio" not in self.stats and "update_norm" not in self.stats:
            return None
        return [ops.copy(v.value) for v in variables]

    def write(self, record, before):
        """Writes this step's per-rule statistics into the log variables.

        Args:
            record: The step's `StepRecord`, after the update (its
                gradients as the update saw them).
            before: What `snapshot` returned.
        """
        plan, positions, grads, variables = (
            record.plan, record.positions, record.grads, record.variables
        )
        rules, optimizer_of_rule = self.rules, self._optimizer_of_rule
        members = {rule.name: [] for rule in rules}
        for i, position in enumerate(positions):
            for name in plan.trainable[position].rules:
                members[name].append(i)
        for rule_index, rule in enumerate(rules):
            idx = members[rule.name]
            values = {}
            if "lr" in self.stats:
                source = _rate_source(plan, rule, optimizer_of_rule[rule_index])
                rate = ops.cast(
                    internals.current_learning_rate(self._updaters.optimizers[source]), "float32"
                )
                if rule.sets_lr_scale:
                    rate = ops.multiply(rate, ops.cast(rule.scale_value(record.step), "float32"))
                values["lr"] = rate
            if "grad_norm" in self.stats:
                values["grad_norm"] = _norm([grads[i] for i in idx])
            if "update_ratio" in self.stats or "update_norm" in self.stats:
                change = _norm([ops.subtract(variables[i].value, before[i]) for i in idx])
            if "update_norm" in self.stats:
                values["update_norm"] = change
            if "update_ratio" in self.stats:
                weight = _norm([before[i] for i in idx])
                values["update_ratio"] = ops.divide(
                    change, ops.maximum(weight, keras.backend.epsilon())
                )
            for stat, value in values.items():
                self.log_variables[f"{stat}/{rule.name}"].assign(value)

    def values(self):
        return {
            name: float(ops.convert_to_numpy(variable))
            for name, variable in self.log_variables.items()
        }


def _rate_source(plan, rule, own_optimizer):
    """The optimizer whose rate a rule's `lr` reports: the optimizer the
    rule sets, else the one all its variables follow, else the inner one."""
    if own_optimizer is not None:
        return own_optimizer
    followed = {p.optimizer for p in plan.variables if rule.name in p.rules}
    if len(followed) == 1:
        return followed.pop()
    return plan_lib.DEFAULT


def _norm(tensors):
    if not tensors:
        return ops.zeros((), "float32")
    return ops.sqrt(sum(ops.sum(ops.square(ops.cast(t, "float32"))) for t in tensors))
