"""What a user reads and changes on `LayerwiseOptimizer` while it trains.

The rules and the plan (`get_rule`, `set_lr_scale`, `set_frozen`,
`summary`; `exclude_from_weight_decay`, before build), the optimizers it
drives (`all_optimizers`, `optimizer_of`), and what the stages expose
(`diagnostics`, `ema_pairs`, `skipped_steps`).
A part of the facade, composed into `LayerwiseOptimizer` with the Keras
optimizer it is; it reads the facade's stages and never runs in a step.
"""

from layerwise import _validation
from layerwise._internals import optimizers as internals
from layerwise.optim import summary as summary_lib


class Controls:
    """The control and inspection methods of `LayerwiseOptimizer`."""

    @property
    def rules(self):
        """The optimizer's rules (its own copies, named)."""
        return self._rules

    @property
    def plan(self):
        """The per-variable `Plan` (available once built)."""
        if self._planning.current is None:
            raise ValueError(
                "The optimizer is not built yet: call `fit` or "
                "`optimizer.build(model.trainable_variables)` first."
            )
        return self._planning.current

    def all_optimizers(self):
        """Every Keras optimizer this one drives: the inner one, the rules'
        optimizers, then those created when variables were unfrozen at
        runtime.

        A method, not an attribute: Keras' saving would store the state of
        every optimizer an attribute exposes once more, and its callbacks
        treat an optimizer with an `optimizers` attribute as a
        `MultiOptimizer`.
        """
        return tuple(self._updaters.updaters)

    def optimizer_of(self, variable):
        """The Keras optimizer that holds `variable`'s slots and updates it."""
        for p in self.plan.variables:
            if p.variable is variable:
                return self._updaters.updaters[p.updater]
        raise ValueError(
            "`variable` must be one this optimizer was built with. Received: "
            f"variable={getattr(variable, 'path', variable)!r}"
        )

    def get_rule(self, name):
        for rule in self._rules:
            if rule.name == name:
                return rule
        raise ValueError(
            f"`name` must be the name of one of this optimizer's rules "
            f"{[r.name for r in self._rules]}. Received: name={name!r}"
        )

    def set_lr_scale(self, name, value):
        """Changes a rule's learning-rate multiplier from the next step on.

        The multiplier lives in a backend variable, so the change needs no
        retracing or recompiling.

        Args:
            name: The rule's name.
            value: The new multiplier, a finite number >= 0.
        """
        rule = self.get_rule(name)
        value = _validation.check_nonnegative_finite(value, "value")
        if not rule.has_constant_scale:
            raise ValueError(
                f"Rule {name!r} has lr_scale={rule.describe_scale()!r}, which "
                "is not a number: only constant multipliers can be set at "
                "runtime. Give the rule a number (or a schedule that covers "
                "the change) when creating the optimizer."
            )
        rule.lr_scale = value

    def set_frozen(self, name, frozen):
        """Freezes or unfreezes a rule's variables from the next step on.

        A variable that becomes trainable here starts with fresh optimizer
        state, exactly as a new optimizer would: zero slots and a step count
        of its own starting at 0 (Adam's bias correction restarts), at the
        current learning rate of its optimizer times its multipliers. The
        variables unfrozen by one call share a new optimizer of the class
        and configuration of the one they follow. Freezing keeps a
        variable's slots, except that an optimizer created by an earlier
        unfreeze is dropped, with its slots, once all of its variables are
        frozen again (its state would never be read again), unless
        `accumulate_steps` or `ema` is on (their per-variable state is
        kept with it). Slots given at build stay allocated.
        The change is recorded in the optimizer's config, so a saved model
        resumes with the same state.

        A compiled train step must be retraced to see the change:
        `layerwise.callbacks.GradualUnfreezing` does that in `fit`; in a
        custom loop, re-create the `tf.function` / `jax.jit` step.

        Args:
            name: The rule's name.
            frozen: `True` to freeze, `False` to unfreeze.
        """
        rule = self.get_rule(name)
        if not isinstance(frozen, bool):
            raise TypeError(f"`frozen` must be True or False. Received: frozen={frozen!r}")
        previous, rule.frozen = rule.frozen, frozen
        if not self.built:
            return
        self._planning.record_built_on(self._updaters.optimizers)
        try:
            plan = self._planning.make(internals.built_variables(self))
            self._pipeline.check(plan)
            unfrozen = {id(v) for v in self._pipeline["freezing"].newly_trainable(plan)}
            sources = {}
            for p in plan.trainable:
                if id(p.variable) in unfrozen:
                    sources.setdefault(p.optimizer, []).append(p.variable)
            for source, members in sorted(sources.items()):
                self._add_fresh(source, members)
            if sources:
                plan = self._planning.make(internals.built_variables(self))
            if self._release_retired(plan):
                plan = self._planning.make(internals.built_variables(self))
        except BaseException:
            rule.frozen = previous
            raise
        self._use_plan(plan)

    def _release_retired(self, plan):
        """Drops the optimizers created at runtime none of whose variables
        is trainable in `plan` (their slots would never be read again: a
        variable that unfreezes gets a fresh optimizer). Kept while
        accumulation or EMA are on, whose per-variable state lives in this
        optimizer and is rebuilt per runtime optimizer when loading.

        Returns:
            Whether any was dropped.
        """
        if self._pipeline.keeps_per_variable_state:
            return False
        trainable = {id(p.variable) for p in plan.trainable}
        first = len(self._updaters.optimizers)
        retired = [
            index
            for index in range(first, len(self._updaters.updaters))
            if not any(id(v) in trainable for v in internals.built_variables(self._updaters.updaters[index]))
        ]
        if not retired:
            return False
        for index in range(first, len(self._updaters.updaters)):
            internals.untrack_for_checkpoints(self, f"unfrozen_optimizer_{index}")
        renumbered = self._updaters.release(retired)
        self._planning.renumber(renumbered)
        for index in range(first, len(self._updaters.updaters)):
            internals.track_for_checkpoints(
                self, self._updaters.updaters[index], f"unfrozen_optimizer_{index}"
            )
        return True

    def exclude_from_weight_decay(self, var_list=None, var_names=None):
        """Excludes variables from every optimizer's weight decay, as Keras'
        `exclude_from_weight_decay` does for one optimizer (a later call
        replaces an earlier one). Must be called before the optimizer is
        built. A rule's `weight_decay` still overrides it.

        Args:
            var_list: Variables to exclude.
            var_names: Strings; a variable whose name contains one of them
                (a regular expression search on `variable.name`) is excluded.
        """
        if self.built:
            raise ValueError(
                "`exclude_from_weight_decay()` can only be configured before "
                "the optimizer is built (the plan is computed at build). Use "
                "`Rule(match, weight_decay=0.0)` to change decay later, on a "
                "new optimizer."
            )
        self._updaters.exclude_from_weight_decay(var_list=var_list, var_names=var_names)

    def summary(self, print_fn=None):
        """Prints, per variable: rules, update rule, lr scale, effective lr,
        decay, transforms and whether it is frozen."""
        summary_lib.print_summary(self, print_fn=print_fn)

    def summary_rows(self):
        """What `summary()` prints, as one dict per variable (see
        `layerwise.optim.summary.summary_rows` for the keys)."""
        return summary_lib.summary_rows(self)

    @property
    def accumulation(self):
        """The accumulation stage: `micro_steps_taken()`, `traced_as(phase)`."""
        return self._pipeline["accumulation"]

    def ema_pairs(self):
        """`(variable, average)` for every variable that has an EMA."""
        ema = self._pipeline["moving_average"]
        if not ema.enabled:
            return []
        return [(v, ema.average(v)) for v in internals.built_variables(self) if ema.has_average(v)]

    def diagnostics(self):
        """The last step's per-rule statistics (see `log`), as floats.

        Returns:
            A dict `{"<stat>/<rule>": value}`, empty when `log` is empty.
        """
        return self._pipeline["diagnostics"].values()

    @property
    def log_variables(self):
        """The variables holding the diagnostics, by log name (with
        `skipped_steps` when `skip_nonfinite` is on)."""
        variables = dict(self._pipeline["diagnostics"].log_variables)
        guard = self._pipeline["finite_guard"]
        if guard.enabled:
            variables["skipped_steps"] = guard.skipped_steps
        return variables

    @property
    def skipped_steps(self):
        """How many steps `skip_nonfinite` skipped (an int variable)."""
        guard = self._pipeline["finite_guard"]
        if not guard.enabled:
            raise ValueError("`skipped_steps` exists only with `skip_nonfinite=True`.")
        return guard.skipped_steps
