"""Each update group's learning rate: where the multipliers meet the
optimizers' own rates.

A group's rate is the current rate of the optimizer holding its slots
(schedules evaluated at its source's step count) times the multiplier of
every rule in its `scale_rules`. Each variable then follows exactly the
trajectory it would follow under its optimizer built with that learning
rate, for every update rule: the gradient is left alone, so Adam's
normalization never sees the multiplier.
"""

from keras import ops

from layerwise.optim import stage


class LearningRates(stage.Stage):
    """In: `record.groups`, each update group present this step with its
    variables' indices and its rate.

    Args:
        rules: The optimizer's bound rules (their multipliers).
        updaters: The optimizer's `Updaters` (their rates).
    """

    name = "learning_rates"

    def __init__(self, rules, updaters):
        self.rules = rules
        self._updaters = updaters

    def run(self, record, proceed):
        scales = {}
        rates = {}
        tensor_rates = {}
        groups = []
        for group in record.plan.groups:
            indices = record.locate(group.indices)
            if not indices:
                continue
            updater = group.updater
            if updater not in rates:
                rates[updater] = self._updaters.learning_rate(updater)
            learning_rate = rates[updater]
            if group.scale_rules:
                if updater not in tensor_rates:
                    tensor_rates[updater] = ops.cast(learning_rate, "float32")
                learning_rate = tensor_rates[updater]
            for rule_index in group.scale_rules:
                if rule_index not in scales:
                    value = self.rules[rule_index].scale_value(record.step)
                    scales[rule_index] = ops.cast(value, "float32")
                # Two float32 tensors: the backend's own `*`. On eager torch
                # `ops.multiply`'s dispatch was most of a group's own Python.
                learning_rate = learning_rate * scales[rule_index]
            groups.append((group, indices, learning_rate))
        record.groups = groups
        proceed(record)
