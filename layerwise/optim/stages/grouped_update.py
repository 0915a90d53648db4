"""The grouped update: every optimizer, its variables, one call per group.

This is where the learning-rate multiplier enters the update. Each update
group (variables sharing one slot-holding optimizer, one set of multiplier
rules and one decay override) decays and updates its variables with that
optimizer's own weight decay and update rule at `learning_rate * scale`,
where `learning_rate` is the current rate of the optimizer the rules
assign (the inner one, or a rule's `optimizer`). Each variable therefore
follows exactly the trajectory it would follow under its optimizer built
with that learning rate, for every update rule (Adam's normalization never
sees the multiplier, because the gradient is left alone).

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


class GroupedUpdate:
    """Owns the optimizers that hold slots and runs the grouped update.

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

    def apply(self, plan, rules, positions, grads, variables, before_update=None):
        """Decays and updates each group at its rate; counts the steps of
        every optimizer called except the inner one (the caller counts
        that one last: it is the wrapper's step).

        Per group this does the group's rate (one multiply per scale rule),
        its decay calls and one call of its optimizer's update; everything
        per variable was resolved in the plan.

        Args:
            plan: The optimizer's `Plan`.
            rules: The optimizer's rules (their multipliers are read here).
            positions, grads, variables: Positions in `plan.trainable`,
                processed gradients (on TensorFlow already summed over
                replicas) and the variables.
            before_update: Optional callable `(indices, variables,
                learning_rate)` called per group after its decay, right
                before its optimizer's update call (the update-transform
                stage copies the weights there).
        """
        step = internals.iterations_variable(self.optimizers[0])
        # In the usual step every variable has a gradient, in build order:
        # positions are then the identity, and no lookup is needed.
        if list(positions) == list(range(len(plan.trainable))):
            def locate(members):
                return members
        else:
            index_of = {p: i for i, p in enumerate(positions)}

            def locate(members):
                return [index_of[p] for p in members if p in index_of]
        scales = {}
        rates = {}
        tensor_rates = {}
        saved = self._saved_step_states(plan)
        called = set()
        for group in plan.groups:
            idx = locate(group.indices)
            if not idx:
                continue
            updater = self.updaters[group.updater]
            if group.updater not in rates:
                rates[group.updater] = self.learning_rate(group.updater)
            learning_rate = rates[group.updater]
            if group.scale_rules:
                if group.updater not in tensor_rates:
                    tensor_rates[group.updater] = ops.cast(learning_rate, "float32")
                learning_rate = tensor_rates[group.updater]
            for rule_index in group.scale_rules:
                if rule_index not in scales:
                    value = rules[rule_index].scale_value(step)
                    scales[rule_index] = ops.cast(value, "float32")
                # Two float32 tensors: the backend's own `*`. On eager torch
                # `ops.multiply`'s dispatch was most of a group's own Python.
                learning_rate = learning_rate * scales[rule_index]
            group_vars = [variables[i] for i in idx]
            if group.decays is None:
                internals.apply_weight_decay(updater, group_vars, learning_rate)
            else:
                for coefficient, members in group.decays:
                    decayed = [variables[i] for i in locate(members)]
                    if decayed:
                        internals.decay_weights(updater, decayed, coefficient, learning_rate)
            if group.updater in saved and group.updater in called:
                # Per-step state (Nadam's `_u_product`) must advance once per
                # step, not once per group: every group starts from the same
                # pre-step value, so the last group leaves it advanced once.
                for state, value in zip(self._step_states[group.updater], saved[group.updater]):
                    state.assign(value)
            if before_update is not None:
                before_update(idx, variables, learning_rate)
            internals.backend_update_step(
                updater, [grads[i] for i in idx], group_vars, learning_rate
            )
            called.add(group.updater)
        for index in sorted(called - {0}):
            internals.iterations_variable(self.updaters[index]).assign_add(1)

    def _saved_step_states(self, plan):
        saved = {}
        for updater, calls in plan.calls_per_updater.items():
            if calls > 1 and self._step_states[updater]:
                saved[updater] = [
                    ops.copy(ops.convert_to_tensor(s)) for s in self._step_states[updater]
                ]
        return saved

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
