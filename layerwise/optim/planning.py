"""The plan's lifecycle on `LayerwiseOptimizer`.

`plan.make_plan` merges rules over variables; this part decides when it
runs and what it is told: at build, again when `set_frozen` or a new
`weight_decay` changes what variables get, with the optimizer holding each
unfrozen variable's slots, and with what a loaded optimizer needs to build
the same state as the one that was saved (the paths each optimizer was
built on, the variables unfrozen at runtime).
"""

from layerwise._internals import optimizers as internals
from layerwise.optim import plan as plan_lib


class Planning:
    """Makes and keeps `LayerwiseOptimizer`'s plan.

    Args:
        rules: The optimizer's bound rules.
        optimizer_of_rule: Per rule, the index of its optimizer or `None`.
        strict: Whether a rule matching no variable is an error.
        updates: The `GroupedUpdate` (its optimizers resolve decay).
        key: `variable -> key`, the wrapper's variable key.
    """

    def __init__(self, rules, optimizer_of_rule, strict, updates, key):
        self._rules = rules
        self._optimizer_of_rule = optimizer_of_rule
        self.strict = strict
        self._updates = updates
        self._key = key
        # The optimizer holding a variable's slots when it is not its rule's
        # (variables unfrozen at runtime get a fresh one), by variable key.
        self._updater_of = {}
        self._decay = updates.decay_settings()
        self.current = None
        # Once the plan changed after build (`set_frozen`): the paths each
        # optimizer was built on, saved so a loaded one matches.
        self.built_on = None
        # `(source, paths)` per fresh optimizer of a loaded config, created
        # again at build.
        self.saved_fresh = []

    def make(self, variables):
        """A `Plan` of `variables` under the rules as they are now, with
        the decay the optimizers give now (recorded: see `decay_changed`)."""
        paths = [plan_lib.path_of(v) for v in variables]
        for rule in self._rules:
            rule.selector.bind(paths)
        self._decay = self._updates.decay_settings()
        return plan_lib.make_plan(
            self._rules, variables, self._optimizer_of_rule, self.strict,
            updater_of=lambda v, optimizer: self._updater_of.get(self._key(v), optimizer),
            decay_of=self._updates.decay_of,
        )

    def decay_changed(self):
        """Whether an optimizer's `weight_decay` changed since the plan was
        made: Keras reads it at every step (eager torch follows a change at
        once, a compiled step at its next trace), the plan at build."""
        return self._updates.decay_settings() != self._decay

    def slot_holders(self, plan):
        """Per rule-level optimizer, the variables it is built on."""
        fresh_paths = {path for _, paths in self.saved_fresh for path in paths}
        return plan_lib.slot_holders(
            plan, len(self._updates.optimizers), self.built_on, fresh_paths
        )

    def record_built_on(self, optimizers):
        """Records the paths each of `optimizers` was built on, before the
        first change of the plan after build."""
        if self.built_on is None:
            self.built_on = [
                [plan_lib.path_of(v) for v in internals.built_variables(o)] for o in optimizers
            ]

    def hold(self, variables, updater):
        """From the next plan on, `updater` holds `variables`' slots."""
        for variable in variables:
            self._updater_of[self._key(variable)] = updater

    def renumber(self, renumbered):
        """Follows `GroupedUpdate.release`: `renumbered` maps the index of
        every kept optimizer to its new one; variables of a dropped one
        fall back to their rule's optimizer."""
        self._updater_of = {
            key: renumbered[index]
            for key, index in self._updater_of.items()
            if index in renumbered
        }
