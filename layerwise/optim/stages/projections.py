"""The projection stage: rules' `project=[...]` on the weights after the step.

Runs after the update (and its transforms) and after Keras' own
`variable.constraint`: each projected variable is read once, mapped
through its rules' projections in rule order, and written once. A plan
without projections adds nothing to the step.
"""

from layerwise.optim import projections as projections_lib
from layerwise.optim import symbolic


class Projections:
    """Projects the weights of the rules that ask for it.

    Args:
        rules: The optimizer's (bound) rules.
    """

    def __init__(self, rules):
        self.rules = rules

    def run(self, plan, positions, variables):
        """Projects this step's variables.

        Args:
            plan: The optimizer's `Plan`.
            positions: Each variable's position in `plan.trainable`.
            variables: The step's variables.
        """
        if not plan.project_steps:
            return
        index_of = {p: i for i, p in enumerate(positions)}
        chains = {}
        for rule_index, members in plan.project_steps:
            for p in members:
                if p in index_of:
                    chains.setdefault(index_of[p], []).extend(self.rules[rule_index].project)
        for i, chain in chains.items():
            value = variables[i].value
            for projection in chain:
                value = projection(value)
            variables[i].assign(value)

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
