"""`LayerwiseOptimizer`: the Keras facade over the stages of a step.

The gradient's whole path is `apply` -> `_step` below. The stages it goes
through each live in their own module (`layerwise/optim/stages/`): freezing,
the non-finite guard, accumulation, gradient processing, the grouped update
(where the learning-rate multiplier meets each optimizer's own update rule
and weight decay), the rules' update transforms, Keras' constraints and
the rules' projections, diagnostics and the moving average.
"""

import weakref

import keras

from layerwise import _validation
from layerwise._internals import optimizers as internals
from layerwise.optim import arguments
from layerwise.optim import controls
from layerwise.optim import plan as plan_lib
from layerwise.optim import planning as planning_lib
from layerwise.optim import processing
from layerwise.optim import saving
from layerwise.optim import summary as summary_lib
from layerwise.optim import swap_ema_view
from layerwise.optim.stages import accumulation as accumulation_lib
from layerwise.optim.stages import diagnostics as diagnostics_lib
from layerwise.optim.stages import ema as ema_lib
from layerwise.optim.stages import finite_guard as finite_guard_lib
from layerwise.optim.stages import freezing as freezing_lib
from layerwise.optim.stages import grouped_update as grouped_update_lib
from layerwise.optim.stages import projections as projections_lib
from layerwise.optim.stages import update_transforms as update_transforms_lib


@keras.saving.register_keras_serializable(package="layerwise")
class LayerwiseOptimizer(controls.Controls, keras.optimizers.Optimizer):
    """Wraps a Keras optimizer and applies per-variable rules to it.

    Each variable follows its optimizer's own update at `learning_rate *
    lr_scale`, where `lr_scale` is the product of the multipliers of the
    rules that match it and the optimizer is the inner one or the one a
    rule gives it (`Rule(match, optimizer=...)`). This is exact for every
    update rule, adaptive ones included, and each optimizer keeps its own
    semantics (its weight decay and its routing, as Muon's, its
    `exclude_from_weight_decay`, its slots and step count). Rules can also
    freeze variables (no update, no slots), override weight decay, and
    transform gradients before the update.

    Per step: freezing, the non-finite guard, accumulation, then once per
    real step the gradient hook, rule transforms and clipping
    (`layerwise/optim/processing.py`), weight decay and the update group by
    group, the rules' update transforms, Keras' constraints, the rules'
    projections, diagnostics, EMA and the step count; `apply` and `_step` below
    read in that order.

    Args:
        optimizer: The inner (default) `keras.optimizers.Optimizer`,
            unbuilt: SGD, Adam, AdamW, Muon, ScheduleFreeAdamW, ... It
            updates every variable no rule gives an optimizer, and owns the
            step counter (`iterations`) and the base learning rate.
        rules: A list of `layerwise.Rule`. See `Rule` for how several rules
            matching one variable merge.
        gradient_hook: Optional callable `(grads, variables) -> grads` that
            sees every non-frozen gradient at once, like overriding Keras 2's
            `get_gradients`.
        strict: If `True` (default), building fails when a rule matches no
            variable. Building on no variable at all (a model with no
            trainable weights) is not checked: no rule could match.
        accumulate_steps: Optional int `k`: gradients of `k` consecutive
            micro-batches are averaged and applied as one step, exactly as
            one `k` times larger batch with a mean-reduced loss. One
            accumulator per non-frozen variable; micro-steps do no update
            work. The inner optimizer's `gradient_accumulation_steps` is
            taken over the same way.
        ema: Optional momentum of an exponential moving average of the
            non-frozen weights, updated once per real step. The inner
            optimizer's `use_ema` / `ema_momentum` is taken over the same
            way. Swap the averages in with `layerwise.ema_weights(model)`;
            validate with them with `layerwise.callbacks.EvaluateWithEMA`.
        ema_bias_correction: If `True`, the average is debiased (optax's
            `ema(debias=True)`); by default the first step copies the weights,
            as Keras' `use_ema` does.
        ema_overwrite_at_end: If `True`, `fit` ends by writing the averages
            into the weights, as Keras' `use_ema` does (and the default when
            the inner optimizer brought `use_ema`).
        skip_nonfinite: If `True`, a step whose gradients (of non-frozen
            variables, before any transform) contain NaN or Inf is skipped
            entirely and counted in `skipped_steps`. By default, as in
            Keras, non-finite gradients reach the update.
        skip_frozen_gradients: If `True` (default), frozen variables are
            marked `trainable=False` while frozen, so Keras computes no
            gradient for them. `False` leaves the flags alone (their
            gradients are computed and dropped).
        ema_overwrite_frequency: Optional int `f`: every `f` real steps the
            weights are overwritten by their averages (Keras'
            `ema_overwrite_frequency`; taken over from the inner optimizer
            the same way). Needs `ema`.
        log: Per-rule diagnostics computed at every real step, among
            `"lr"`, `"grad_norm"`, `"update_ratio"` and `"update_norm"` (see
            `layerwise.callbacks.LogDiagnostics`).
        name: Optional name of the optimizer.

    Example:

    >>> inputs = keras.Input((4,))
    >>> body = keras.layers.Dense(8, name="body")
    >>> head = keras.layers.Dense(2, name="head")
    >>> model = keras.Model(inputs, head(body(inputs)))
    >>> opt = lw.LayerwiseOptimizer(
    ...     keras.optimizers.AdamW(1e-3, weight_decay=0.01),
    ...     rules=[lw.Rule(body, lr_scale=0.1, name="body"),
    ...            lw.Rule(head, optimizer=keras.optimizers.SGD(0.1), name="head")])
    >>> opt.build(model.trainable_variables)
    >>> opt.set_lr_scale("body", 0.2)
    >>> opt.get_rule("body").lr_scale
    0.2
    >>> type(opt.optimizer_of(head.kernel)).__name__
    'SGD'
    """

    loss_scale_factor = arguments.InnerArgument()
    clipnorm = arguments.InnerArgument()
    clipvalue = arguments.InnerArgument()
    global_clipnorm = arguments.InnerArgument()
    weight_decay = arguments.InnerArgument()

    def __init__(
        self,
        optimizer,
        rules=(),
        *,
        gradient_hook=None,
        strict=True,
        accumulate_steps=None,
        ema=None,
        ema_bias_correction=False,
        ema_overwrite_at_end=False,
        ema_overwrite_frequency=None,
        skip_nonfinite=False,
        skip_frozen_gradients=True,
        log=(),
        name=None,
        **kwargs,
    ):
        checked = arguments.check(
            optimizer, rules, gradient_hook, strict, accumulate_steps, ema,
            ema_bias_correction, ema_overwrite_at_end, ema_overwrite_frequency,
            skip_nonfinite, skip_frozen_gradients, log, kwargs,
        )
        super().__init__(learning_rate=0.0, name=name)
        # After the base class validated `name`: nothing below can fail
        # before the inner optimizer is changed.
        accumulate_steps, ema, ema_overwrite_at_end, ema_overwrite_frequency = arguments.take_over(
            optimizer, checked["accumulate_steps"], checked["ema"], ema_overwrite_at_end,
            checked["ema_overwrite_frequency"],
        )
        self.inner_optimizer = optimizer
        self.gradient_hook = gradient_hook
        self.ema_bias_correction = ema_bias_correction
        self.ema_overwrite_at_end = ema_overwrite_at_end
        self.skip_nonfinite = skip_nonfinite
        self.skip_frozen_gradients = skip_frozen_gradients
        self.log = checked["log"]
        # What Keras' own arguments read as on the wrapper.
        self.use_ema = ema is not None
        self.ema_momentum = ema if ema is not None else optimizer.ema_momentum
        self.ema_overwrite_frequency = ema_overwrite_frequency
        self.gradient_accumulation_steps = accumulate_steps if accumulate_steps > 1 else None
        self._rules = arguments.bind_rules(rules, self._add_scale_variable)
        optimizers, self._optimizer_of_rule = arguments.distinct_optimizers(optimizer, self._rules)
        for index, owned in enumerate(optimizers):
            owned._layerwise_owner = weakref.ref(self)  # weak: no cycle
            if index:
                internals.track_for_checkpoints(self, owned, f"rule_optimizer_{index}")
        self._freezing = freezing_lib.Freezing(skip_frozen_gradients, self._key)
        self._guard = finite_guard_lib.FiniteGuard(skip_nonfinite)
        self._guard.create(self._add_scalar)
        self._diagnostics = diagnostics_lib.Diagnostics(
            self.log, [r.name for r in self._rules], self._add_scalar
        )
        self._accumulation = accumulation_lib.Accumulation(accumulate_steps, self._key)
        self._ema = ema_lib.MovingAverage(
            ema, ema_bias_correction, self._key, ema_overwrite_frequency
        )
        self._updates = grouped_update_lib.GroupedUpdate(optimizers)
        self._update_transforms = update_transforms_lib.UpdateTransforms(self._rules)
        self._projections = projections_lib.Projections(self._rules)
        self._planning = planning_lib.Planning(
            self._rules, self._optimizer_of_rule, strict, self._updates, self._key
        )
        self._pending_exclusions = None
        self._format = saving.FORMAT

    def _key(self, variable):
        return internals.variable_key(self, variable)

    def _add_scale_variable(self, rule_name, value):
        return self._add_scalar(f"lr_scale_{_validation.variable_name(rule_name)}", value=value)

    def _add_scalar(self, name, dtype="float32", value=0):
        """A scalar of this optimizer's own state (multiplier, counter or
        diagnostic), written by the first replica only."""
        return self.add_variable(
            shape=(), initializer=keras.initializers.Constant(value), dtype=dtype,
            aggregation="only_first_replica", name=name,
        )

    # ------------------------------------------------------------------
    # The Keras optimizer's public face.

    def _own_state(self):
        """The variables this optimizer created itself, in creation order.

        The inner optimizer owns the step counter and the learning rate: the
        base class's copies are no state of this optimizer. They stay
        tracked (TensorFlow's checkpoints refuse a list that shrank).
        """
        unused = internals.base_counter_and_rate(self)
        return [v for v in internals.own_variables(self) if not any(v is u for u in unused)]

    @property
    def variables(self):
        return self._own_state() + self._updates.variables

    @property
    def iterations(self):
        return self.inner_optimizer.iterations

    @property
    def learning_rate(self):
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, value):
        # Keras' `LearningRateScheduler` and `ReduceLROnPlateau` set this:
        # every group's rate moves by the same factor.
        self._updates.set_learning_rate(value)

    @property
    def strict(self):
        return self._planning.strict

    @strict.setter
    def strict(self, value):
        self._planning.strict = value

    @property
    def accumulate_steps(self):
        return self._accumulation.steps

    @property
    def ema(self):
        return self._ema.momentum

    def scale_loss(self, loss):
        return self.inner_optimizer.scale_loss(loss)

    def finalize_variable_values(self, var_list):
        # Called by `fit` at its end: Keras' `use_ema` semantics when asked.
        if self.ema_overwrite_at_end and self.built:
            for variable, average in self.ema_pairs():
                variable.assign(average)

    # ------------------------------------------------------------------
    # Build and apply: the gradient's path.

    def build(self, variables):
        if self.built:
            return
        variables = list(variables)
        saving.restore_decay_exclusions(self._updates.optimizers, self._pending_exclusions, variables)
        plan = self._planning.make(variables)
        processing.check_symbolically(
            plan, self._rules, self.gradient_hook, self._updates.optimizers
        )
        self._update_transforms.check(plan)
        self._projections.check(plan)
        # The base build would create Keras' own accumulators and averages
        # for every variable; the stages create theirs for non-frozen ones.
        steps, self.gradient_accumulation_steps, self.use_ema = (
            self.gradient_accumulation_steps, None, False
        )
        super().build(variables)
        self.gradient_accumulation_steps, self.use_ema = steps, self._ema.enabled
        slots_of = self._planning.slot_holders(plan)
        ordered = [v for members in slots_of for v in members]
        self._accumulation.build(self._add_scalar, self.add_variable_from_reference, ordered)
        self._ema.build(self.add_variable_from_reference, ordered)
        self._updates.build(slots_of)
        for source, paths in self._planning.saved_fresh:
            wanted = set(paths)
            self._add_fresh(source, [v for v in variables if plan_lib.path_of(v) in wanted], paths)
        if self._planning.saved_fresh:
            # The fresh optimizers now hold some variables' slots.
            plan = self._planning.make(variables)
        self._use_plan(plan)
        if self._ema.enabled:
            swap_ema_view.expose(self)
        self.built = True

    def _add_fresh(self, source, variables, paths=None, at_runtime=False):
        with internals.variable_creation_scope(self._updates.optimizers[source]):
            self._accumulation.add(self.add_variable_from_reference, variables)
            self._ema.add(self.add_variable_from_reference, variables, at_runtime)
        index = self._updates.add_fresh(source, variables, paths)
        internals.track_for_checkpoints(
            self, self._updates.updaters[index], f"unfrozen_optimizer_{index}"
        )
        self._planning.hold(variables, index)

    def _use_plan(self, plan):
        self._planning.current = plan
        self._freezing.apply(plan)

    def stateless_apply(self, optimizer_variables, grads, trainable_variables):
        # As Keras' version, but `trainable_variables` may also be the values
        # of the still-trainable variables only (JAX's trainer passes
        # `model.trainable_variables`, without the variables marked frozen).
        if not self.built:
            raise ValueError(
                "To call `stateless_apply`, the optimizer must be built: call "
                "`optimizer.build(trainable_variables)` first."
            )
        if len(optimizer_variables) != len(self.variables):
            raise ValueError(
                "`optimizer_variables` must correspond 1:1 to "
                f"`optimizer.variables` ({len(self.variables)}). Received "
                f"{len(optimizer_variables)} values."
            )
        targets = arguments.stateless_targets(self, list(trainable_variables))
        mapping = list(zip(targets, trainable_variables)) + list(
            zip(self.variables, optimizer_variables)
        )
        with keras.StatelessScope(state_mapping=mapping) as scope:
            self.apply(grads, targets)
        return (
            [scope.get_current_value(v) for v in targets],
            [scope.get_current_value(v) for v in self.variables],
        )

    def apply_gradients(self, grads_and_vars):
        grads, variables = zip(*grads_and_vars)
        self.apply(grads, variables)
        return internals.iterations_variable(self.inner_optimizer)

    def apply(self, grads, trainable_variables=None):
        grads = list(grads)
        if not grads:
            return  # As Keras: applying no gradients is a no-op.
        variables = arguments.resolve_variables(self, grads, trainable_variables)
        with keras.name_scope(self.name), internals.update_context():
            positions, grads, variables, overwrites = self._freezing.trainable_subset(
                grads, variables
            )
            # Under tf.distribute, sum over replicas first: every stage sees
            # the global gradient, as on one device (Keras clips per replica).
            grads, reduced = internals.all_reduce_across_replicas(grads)
            arguments.check_distribution(self, reduced)
            # What a conditional branch may touch (JAX's branches must be
            # pure): only the guard and accumulation branch.
            state = []
            if self._guard.enabled or self._accumulation.enabled:
                state = self.variables + list(variables) + [v for _, v in overwrites]

            def real_step(mean):
                self._step(positions, mean, variables)

            self._guard.run(
                grads,
                lambda raw: self._accumulation.run(raw, variables, real_step, state, overwrites),
                state,
            )

    def _step(self, positions, grads, variables):
        """One real step: process, update per group, transform the updates,
        constrain and project the weights, observe, average, count."""
        step = internals.iterations_variable(self.inner_optimizer)
        if self._planning.decay_changed():
            self._use_plan(self._planning.make(internals.built_variables(self)))
        plan = self._planning.current
        if grads:
            grads = processing.unscale(self.inner_optimizer, grads)
            grads = processing.process_gradients(
                plan, self._rules, self.gradient_hook, self._updates.optimizers,
                positions, grads, variables,
            )
            before = self._diagnostics.snapshot(variables)
            pending = self._update_transforms.start(plan, positions)
            self._updates.apply(
                plan, self._rules, positions, grads, variables,
                before_update=pending.capture if pending is not None else None,
            )
            if pending is not None:
                pending.finish(grads, variables)
            for variable in variables:
                if variable.constraint is not None:
                    variable.assign(variable.constraint(variable))
            self._projections.run(plan, positions, variables)
            self._diagnostics.record(
                plan, self._rules, self._optimizer_of_rule,
                lambda index: internals.current_learning_rate(self._updates.optimizers[index]),
                positions, grads, variables, before, step,
            )
        self._ema.update(variables, step)
        step.assign_add(1)

    # ------------------------------------------------------------------
    # Serialization.

    def set_weights(self, weights):
        arguments.check_weights(self, weights)
        for variable, weight in zip(self.variables, weights):
            variable.assign(weight)

    def load_own_variables(self, store):
        if self._format == 1:
            saving.load_format_1(self, store)
            return
        super().load_own_variables(store)

    def get_config(self):
        return saving.config_of(self)

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return saving.from_config(cls, config, custom_objects)

    def __repr__(self):
        return summary_lib.describe(self)


def layerwise_optimizer_of(model):
    """The model's `LayerwiseOptimizer`, also under a `LossScaleOptimizer`."""
    optimizer = getattr(model, "optimizer", None)
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        optimizer = optimizer.inner_optimizer
    if not isinstance(optimizer, LayerwiseOptimizer):
        raise ValueError(
            "The model must be compiled with a `layerwise.LayerwiseOptimizer` "
            "(optionally inside a `LossScaleOptimizer`). Received: "
            f"optimizer={optimizer!r}"
        )
    return optimizer
