"""Keras' decoupled weight decay, per update group at the group's rate.

Each optimizer's own decay (`v <- v - v * coefficient * rate`, with its
`exclude_from_weight_decay` and Muon's routing, resolved into the plan at
build), or the decay rule of an optimizer that overrides Keras' own, runs
before the update as in Keras' `apply`. A rule's `weight_decay` replaces
the coefficient of its variables. Groups hold disjoint variables, so
decaying every group before updating any is the same as decaying each
right before its update.
"""

from layerwise._internals import optimizers as internals
from layerwise.optim import stage


class WeightDecay(stage.Stage):
    """In: the weights decayed.

    Args:
        updaters: The optimizer's `Updaters`.
    """

    name = "weight_decay"

    def __init__(self, updaters):
        self._updaters = updaters

    def run(self, record, proceed):
        variables = record.variables
        for group, indices, learning_rate in record.groups:
            updater = self._updaters.updaters[group.updater]
            if group.decays is None:
                internals.apply_weight_decay(
                    updater, [variables[i] for i in indices], learning_rate
                )
                continue
            for coefficient, members in group.decays:
                decayed = [variables[i] for i in record.locate(members)]
                if decayed:
                    internals.decay_weights(updater, decayed, coefficient, learning_rate)
        proceed(record)
