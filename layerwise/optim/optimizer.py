"""`LayerwiseOptimizer`: the Keras facade over the pipeline of a step.

`apply` below hands the gradients to the pipeline
(`layerwise/optim/pipeline.py`), whose stages each live in their own
module (`layerwise/optim/stages/`) and share one protocol
(`layerwise/optim/stage.py`): freezing, the sum over replicas, the
non-finite guard, accumulation, gradient processing, the learning rates
(where the multipliers meet each optimizer's rate), weight decay, the
rules' update transforms around the grouped update, Keras' constraints,
the rules' projections, diagnostics, the moving average and the step
count. The facade builds the pipeline, creates its state through it and
answers Keras' optimizer API.
"""

import weakref

import keras

from layerwise._internals import optimizers as internals
from layerwise.optim import arguments
from layerwise.optim import checks
from layerwise.optim import controls
from layerwise.optim import options as options_lib
from layerwise.optim import pipeline as pipeline_lib
from layerwise.optim import plan as plan_lib
from layerwise.optim import planning as planning_lib
from layerwise.optim import saving
from layerwise.optim import stage as stage_lib
from layerwise.optim import summary as summary_lib
from layerwise.optim import swap_ema_view
from layerwise.optim import updaters as updaters_lib


@options_lib.exposed
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

    Per step, the pipeline of `layerwise/optim/pipeline.py`: freezing,
    the non-finite guard, accumulation, then once per real step the
    gradient hook, rule transforms and clipping, the groups' rates, weight
    decay and the update group by group, the rules' update transforms,
    Keras' constraints, the rules' projections, diagnostics, EMA and the
    step count. `optimizer.pipeline` lists its stages.

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
        options_lib.refuse_unknown(kwargs)
        checks.check_unowned_optimizer(optimizer, "optimizer")
        options = options_lib.Options.checked(
            optimizer,
            gradient_hook=gradient_hook, strict=strict, accumulate_steps=accumulate_steps,
            ema=ema, ema_bias_correction=ema_bias_correction,
            ema_overwrite_at_end=ema_overwrite_at_end,
            ema_overwrite_frequency=ema_overwrite_frequency, skip_nonfinite=skip_nonfinite,
            skip_frozen_gradients=skip_frozen_gradients, log=log,
        )
        arguments.check_rule_optimizers(optimizer, rules)
        super().__init__(learning_rate=0.0, name=name)
        # After the base class validated `name`: nothing below can fail
        # before the inner optimizer is changed.
        options.take_over(optimizer)
        self.options = options
        self.inner_optimizer = optimizer
        # What Keras' own arguments read as on the wrapper.
        self.use_ema = options.ema is not None
        self.ema_momentum = options.ema if options.ema is not None else optimizer.ema_momentum
        self.ema_overwrite_frequency = options.ema_overwrite_frequency
        self.gradient_accumulation_steps = (
            options.accumulate_steps if options.accumulate_steps > 1 else None
        )
        self._state = stage_lib.StateMaker(self)
        self._rules, self._multipliers = arguments.bind_rules(rules, self._state)
        optimizers, self._optimizer_of_rule = arguments.distinct_optimizers(optimizer, self._rules)
        for index, owned in enumerate(optimizers):
            owned._layerwise_owner = weakref.ref(self)  # weak: no cycle
            if index:
                internals.track_for_checkpoints(self, owned, f"rule_optimizer_{index}")
        self._updaters = updaters_lib.Updaters(optimizers)
        self._pipeline = pipeline_lib.Pipeline(
            pipeline_lib.default_stages(
                options, self._rules, self._optimizer_of_rule, self._updaters, self._key
            )
        )
        self._pipeline.create(self._state)
        self._planning = planning_lib.Planning(
            self._rules, self._optimizer_of_rule, options.strict, self._updaters, self._key
        )
        self._format = saving.FORMAT

    def _key(self, variable):
        return internals.variable_key(self, variable)

    # ------------------------------------------------------------------
    # The Keras optimizer's public face.

    @property
    def variables(self):
        # The saved order (format 3): the rules' multipliers (one vector),
        # each stage's state in pipeline order, then each optimizer's
        # variables. The inner optimizer owns the step counter and the
        # learning rate: the base class's copies are no state of this
        # optimizer (they stay tracked: TensorFlow's checkpoints refuse a
        # list that shrank).
        return self._multipliers.variables + self._pipeline.variables + self._updaters.variables

    @property
    def pipeline(self):
        """The step's `Pipeline` of stages (read-only; see
        `layerwise/optim/pipeline.py`)."""
        return self._pipeline

    @property
    def updaters(self):
        """The `Updaters`: every Keras optimizer this one drives, by index."""
        return self._updaters

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
        self._updaters.set_learning_rate(value)

    @property
    def strict(self):
        return self.options.strict

    @strict.setter
    def strict(self, value):
        if not isinstance(value, bool):
            raise TypeError(f"`strict` must be a bool. Received: strict={value!r}")
        self.options.strict = value
        self._planning.strict = value

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
        self._updaters.apply_exclusions(variables)
        plan = self._planning.make(variables)
        self._pipeline.check(plan)
        # The base build would create Keras' own accumulators and averages
        # for every variable; the stages create theirs for non-frozen ones.
        steps, self.gradient_accumulation_steps, self.use_ema = (
            self.gradient_accumulation_steps, None, False
        )
        super().build(variables)
        self.gradient_accumulation_steps, self.use_ema = steps, self.options.ema is not None
        slots_of = self._planning.slot_holders(plan)
        self._pipeline.build(self._state, [v for members in slots_of for v in members])
        self._updaters.build(slots_of)
        for source, paths in self._planning.saved_fresh:
            wanted = set(paths)
            self._add_fresh(source, [v for v in variables if plan_lib.path_of(v) in wanted], paths)
        if self._planning.saved_fresh:
            # The fresh optimizers now hold some variables' slots.
            plan = self._planning.make(variables)
        self._use_plan(plan)
        if self.options.ema is not None:
            swap_ema_view.expose(self)
        self.built = True

    def _add_fresh(self, source, variables, paths=None):
        with internals.variable_creation_scope(self._updaters.optimizers[source]):
            self._pipeline.add(self._state, variables)
        index = self._updaters.add_fresh(source, variables, paths)
        internals.track_for_checkpoints(
            self, self._updaters.updaters[index], f"unfrozen_optimizer_{index}"
        )
        self._planning.hold(variables, index)

    def _use_plan(self, plan):
        self._planning.current = plan
        self._pipeline.use_plan(plan)

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
        if self._planning.decay_changed():
            self._use_plan(self._planning.make(internals.built_variables(self)))
        record = stage_lib.StepRecord(
            plan=self._planning.current,
            grads=grads,
            variables=variables,
            step=internals.iterations_variable(self.inner_optimizer),
            optimizer_variables=lambda: self.variables,
        )
        with keras.name_scope(self.name), internals.update_context():
            self._pipeline.run(record)

    # ------------------------------------------------------------------
    # Serialization.

    def set_weights(self, weights):
        arguments.check_weights(self, weights)
        for variable, weight in zip(self.variables, weights):
            variable.assign(weight)

    def load_own_variables(self, store):
        saving.load_variables(self, store, self._format)

    def get_config(self):
        built_on = internals.built_variables(self) if self.built else None
        return saving.config_of(self, self._planning.built_on, self._updaters.get_config(built_on))

    @classmethod
    def from_config(cls, config, custom_objects=None):
        arguments, runtime = saving.parse_config(config, custom_objects)
        instance = cls(**arguments)
        instance._restore(runtime)
        return instance

    def _restore(self, runtime):
        """What training changed before the config was saved, applied when
        the optimizer builds (before Keras loads the saved values)."""
        self._format = runtime["format"]
        self._planning.built_on = runtime["built_on"]
        self._planning.saved_fresh = runtime["fresh"]
        self._updaters.restore_decay_exclusions(runtime["exclusions"])
        self._updaters.restore_ratios(runtime["ratios"])

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
