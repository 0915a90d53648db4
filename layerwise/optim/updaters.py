"""The Keras optimizers a `LayerwiseOptimizer` drives, by index.

The stages of the update (`learning_rates`, `weight_decay`,
`grouped_update`) call them; this registry owns them: builds them, creates
the fresh ones variables unfrozen at runtime get, drops those no longer
needed, reads their rates and decay, and moves every group's rate when
Keras' callbacks set the base rate.

Optimizers, by index: 0 is the inner optimizer, 1..n the distinct
optimizers of the rules; after them come the fresh optimizers created when
variables are unfrozen at runtime, each with the class and configuration of
the optimizer it replaces (its *source*, whose learning rate it follows)
and a step count of its own.
"""

import keras
from keras import ops

from layerwise._internals import optimizers as internals
from layerwise.optim import plan as plan_lib


class Updaters:
    """Owns the optimizers that hold slots.

    Args:
        optimizers: The inner optimizer, then the rules' optimizers.
    """

    def __init__(self, optimizers):
        self.optimizers = tuple(optimizers)
        self.updaters = list(optimizers)
        self.sources = list(range(len(optimizers)))
        self._step_states = [() for _ in optimizers]
        # Per fresh optimizer, in creation order: its source and the paths
        # of its variables (saved in the config to rebuild the same state).
        self.fresh = []
        self._ratios = None
        # Exclusions from weight decay read from a saved config, applied
        # at build, once the variables exist.
        self._pending_exclusions = None

    def step_states(self, updater):
        """The per-step state of an updater (Nadam's `_u_product`)."""
        return self._step_states[updater]

    @property
    def variables(self):
        variables = []
        for updater in self.updaters:
            variables.extend(updater.variables)
        return variables

    def build(self, variables_of):
        """Builds each rule-level optimizer on its variables.

        Args:
            variables_of: Per optimizer index, the variables it holds slots
                for (possibly none).
        """
        for index, optimizer in enumerate(self.optimizers):
            optimizer.build(list(variables_of[index]))
            self._adopt(index, optimizer)

    def _adopt(self, index, optimizer):
        # The wrapper sums replicas' gradients before any transform.
        internals.leave_all_reduce_to_caller(optimizer)
        internals.track_step_state(optimizer)
        self._step_states[index] = tuple(internals.step_state(optimizer))

    def add_fresh(self, source, variables, paths=None):
        """A fresh optimizer of the source's class and configuration for
        `variables`, with zero slots and a step count starting at 0.

        Returns:
            Its index.
        """
        base = self.optimizers[source]
        config = base.get_config()
        config["name"] = f"{base.name}_unfrozen_{len(self.updaters)}"
        with internals.variable_creation_scope(base):
            fresh = type(base).from_config(config)
            fresh.build(list(variables))
        internals.copy_decay_exclusion(base, fresh)
        index = len(self.updaters)
        self.updaters.append(fresh)
        self.sources.append(source)
        self._step_states.append(())
        self._adopt(index, fresh)
        self.fresh.append(
            (source, list(paths) if paths is not None else [plan_lib.path_of(v) for v in variables])
        )
        return index

    def release(self, indices):
        """Drops fresh optimizers (their slots go with them).

        Args:
            indices: Indices of fresh optimizers.

        Returns:
            `{old index: new index}` for every optimizer kept.
        """
        dropped = set(indices)
        if any(index < len(self.optimizers) for index in dropped):
            raise ValueError(f"Only fresh optimizers can be released. Received: indices={indices}")
        kept = [i for i in range(len(self.updaters)) if i not in dropped]
        first = len(self.optimizers)
        self.updaters = [self.updaters[i] for i in kept]
        self.sources = [self.sources[i] for i in kept]
        self._step_states = [self._step_states[i] for i in kept]
        self.fresh = [self.fresh[i - first] for i in kept if i >= first]
        return {old: new for new, old in enumerate(kept)}

    def learning_rate(self, updater):
        """The current base learning rate of an updater's group (schedules
        evaluated at its source's step count)."""
        return internals.current_learning_rate(self.optimizers[self.sources[updater]])

    def decay_of(self, variable, updater):
        """The decay coefficient `updater` gives `variable` (`None` for
        none), or `plan.OWN_DECAY_RULE` if it overrides Keras' decay rule.
        Read once, when the plan is made: `exclude_from_weight_decay` is
        fixed at build, and a compiled step bakes the coefficients in."""
        optimizer = self.updaters[updater]
        if not internals.has_keras_decay_rule(optimizer):
            return plan_lib.OWN_DECAY_RULE
        return internals.decay_coefficient(optimizer, variable)

    def decay_settings(self):
        """What `decay_of` read, per updater: when it changes (a user sets
        `weight_decay` during training), the plan must be made again."""
        return tuple(internals.decay_settings(o) for o in self.updaters)

    # ------------------------------------------------------------------
    # The base learning rate, as Keras' learning-rate callbacks set it.

    def set_learning_rate(self, value):
        """Sets the inner optimizer's learning rate to `value` and moves
        every rule optimizer's rate by the same factor, so the ratios
        between groups stay as they were.

        The ratios are read from the current rates when the inner rate is
        not zero, else the last ratios seen are kept (a rate set to 0 and
        back restores every group). Nothing changes if one of the rates is
        a schedule (Keras refuses to set those too).
        """
        wrapped = self.optimizers[0]
        for optimizer in self.optimizers:
            if not _settable(optimizer):
                raise TypeError(_not_settable_message(optimizer))
        ratios = self.learning_rate_ratios()
        wrapped.learning_rate = value
        for optimizer, ratio in zip(self.optimizers[1:], ratios[1:]):
            optimizer.learning_rate = float(value) * ratio
        self._ratios = ratios

    def learning_rate_ratios(self):
        """Each rule-level optimizer's learning rate over the inner one's."""
        rates = [float(ops.convert_to_numpy(o.learning_rate)) for o in self.optimizers]
        if rates[0] == 0.0 and self._ratios is not None:
            return list(self._ratios)
        if rates[0] == 0.0:
            return [1.0] * len(rates)
        return [rate / rates[0] for rate in rates]

    def restore_ratios(self, ratios):
        """Ratios saved in a config (used while the base rate is 0)."""
        self._ratios = list(ratios) if ratios is not None else None

    # ------------------------------------------------------------------
    # Exclusions from weight decay (Keras' own config forgets them).

    def exclude_from_weight_decay(self, var_list=None, var_names=None):
        """Keras' `exclude_from_weight_decay` on every rule-level optimizer."""
        for optimizer in self.optimizers:
            optimizer.exclude_from_weight_decay(var_list=var_list, var_names=var_names)
        self._pending_exclusions = None

    def decay_exclusions(self, variables):
        """What `exclude_from_weight_decay` set on each rule-level
        optimizer: the paths of excluded variables among `variables` and
        the name pattern, or `None` where nothing is excluded. With
        `variables=None` (not built yet), what a loaded config asked for."""
        if variables is None:
            return self._pending_exclusions
        saved = []
        for optimizer in self.optimizers:
            keys, pattern = internals.decay_exclusion(optimizer)
            paths = [
                plan_lib.path_of(v) for v in variables
                if internals.variable_key(optimizer, v) in keys
            ]
            pattern = pattern.pattern if pattern is not None else None
            saved.append({"var_paths": paths, "pattern": pattern} if paths or pattern else None)
        return saved

    def restore_decay_exclusions(self, saved):
        """Exclusions of a saved config, applied by `apply_exclusions`."""
        self._pending_exclusions = saved

    def apply_exclusions(self, variables):
        """Applies the saved exclusions once the variables exist (at
        build, before the plan reads the decay)."""
        for optimizer, exclusion in zip(self.optimizers, self._pending_exclusions or ()):
            if exclusion is None:
                continue
            paths = set(exclusion["var_paths"])
            pattern = exclusion["pattern"]
            optimizer.exclude_from_weight_decay(
                var_list=[v for v in variables if plan_lib.path_of(v) in paths] or None,
                var_names=[pattern] if pattern else None,
            )

    def get_config(self, variables):
        """What training changed, for the optimizer's config: the fresh
        optimizers, the ratios of the rates, the exclusions from decay
        (`variables`: those the optimizer was built on, `None` before)."""
        return {
            "weight_decay_exclusions": self.decay_exclusions(variables),
            "unfrozen_at_runtime": [
                {"source": source, "paths": list(paths)} for source, paths in self.fresh
            ],
            "learning_rate_ratios": (
                self.learning_rate_ratios() if len(self.optimizers) > 1 else None
            ),
        }


def _not_settable_message(optimizer):
    holder = internals.learning_rate_holder(optimizer)
    if isinstance(holder, keras.optimizers.schedules.LearningRateSchedule):
        # Keras' own sentence first: code (and Keras' tests) match on it.
        what = (
            "This optimizer was created with a `LearningRateSchedule` object "
            "as its `learning_rate` constructor argument, hence its learning "
            f"rate is not settable (in optimizer {optimizer.name!r} of the "
            "`LayerwiseOptimizer`)."
        )
    else:
        what = f"The learning rate of {optimizer.name!r} is a callable, not settable."
    return (
        f"{what} Setting the base learning rate (as `LearningRateScheduler` "
        "and `ReduceLROnPlateau` do) cannot move it by the same factor as "
        "the other groups. Use a float learning rate in every optimizer of "
        "the wrapper, or a schedule in every one and no such callback."
    )


def _settable(optimizer):
    # Keras keeps a float learning rate in a variable; a schedule or a
    # callable in the attribute itself.
    return isinstance(internals.learning_rate_holder(optimizer), keras.Variable)
