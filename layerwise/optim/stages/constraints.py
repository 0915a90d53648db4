"""Keras' own constraints: `variable.constraint` (a layer's
`kernel_constraint`, ...) applied after the update, as Keras' optimizers
do, before the rules' projections."""

from layerwise.optim import stage


class Constraints(stage.Stage):
    """Out: each updated variable with a constraint is replaced by its
    constrained value."""

    name = "constraints"

    def run(self, record, proceed):
        proceed(record)
        for variable in record.variables:
            if variable.constraint is not None:
                variable.assign(variable.constraint(variable))
