"""The projection stage: rules' `project=[...]` on the weights after the step.

Runs after the update (and its transforms) and after Keras' own
`variable.constraint`: each projected variable is read once, mapped
through its rules' projections in rule order, and written once. A plan
without projections adds nothing to the step.
"""

from layerwise.optim import projections as projections_lib
from layerwise.optim import stage
from layerwise.optim import symbolic


class Projections(stage.Stage):
    """Projects the weights of the rules that ask for it.

    Out: after Keras' constraints, each projected variable once.

    Args:
        rules: The optimizer's (bound) rules.
    """

    name = "projections"

    def __init__(self, rules):
        self.rules = rules
        # Per position in the plan's `trainable`, its projections in rule
        # order: resolved once per plan, not per step.
        self._chains = {}

    def use_plan(self, plan):
        chains = {}
        for rule_index, members in plan.project_steps:
            for p in members:
                chains.setdefault(p, []).extend(self.rules[rule_index].project)
        self._chains = chains

    def run(self, record, proceed):
        proceed(record)
        if not self._chains:
            return
        for p, variable in zip(record.positions, record.variables):
            chain = self._chains.get(p)
            if chain is None:
                continue
            value = variable.value
            for projection in chain:
                value = projection(value)
            variable.assign(value)

    def check(self, plan):
        """Runs every projection on symbolic weights, at build: one that
        changes a shape or dtype fails before any state exists."""
        for rule_index, positions in plan.project_steps:
            rule = self.rules[rule_index]
            for p in positions:
                variable = plan.trainable[p].variable
                spec = symbolic.like(variable)
                value = spec
                for projection in rule.project:
                    what = (
                        f"A projection of rule {rule.name!r} "
                        f"({projections_lib.describe(projection)})"
                    )
                    new = symbolic.call(projection, value)
                    if new is symbolic.UNKNOWN:
                        break
                    symbolic.check_one(new, spec, variable, what)
                    value = new
