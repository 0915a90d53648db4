"""`LayerwiseOptimizer`: the one place where rules meet the update.

Where the multiplier enters: a Keras optimizer's update rule receives the
learning rate as an argument (`update_step(gradient, variable,
learning_rate)`; on torch the fused `_parallel_update_step(grads, variables,
learning_rate)`). `LayerwiseOptimizer` partitions the variables into groups
that share one multiplier and one weight-decay coefficient, and calls the
inner optimizer's own update once per group with `learning_rate * scale`.
Each variable therefore follows exactly the trajectory it would follow
under the inner optimizer built with that learning rate, for every update
rule (Adam's normalization never sees the multiplier, because the gradient
is left alone), and the multiplier costs one scalar product per group.
"""

import contextlib
import weakref

import keras
from keras import ops

from layerwise._internals import optimizers as internals
from layerwise._internals import trainers as trainer_internals
from layerwise import _validation
from layerwise.optim.stages import accumulation as accumulation_lib
from layerwise.optim.stages import ema as ema_lib
from layerwise.optim import plan as plan_lib
from layerwise.optim import rules as rules_lib
from layerwise.optim import summary as summary_lib
from layerwise.optim import update as update_lib

_PACKAGE = "layerwise"

# Keyword arguments of `keras.optimizers.Optimizer` that belong on the inner
# optimizer: accepting them here would create a second, conflicting copy.
_INNER_ONLY_ARGS = (
    "learning_rate",
    "weight_decay",
    "clipnorm",
    "clipvalue",
    "global_clipnorm",
    "use_ema",
    "ema_momentum",
    "ema_overwrite_frequency",
    "loss_scale_factor",
    "gradient_accumulation_steps",
)


def _check_inner(optimizer):
    if isinstance(optimizer, LayerwiseOptimizer):
        raise ValueError(
            "`optimizer` must not be a LayerwiseOptimizer: pass its inner "
            "optimizer and the rules of both in one list instead. Received: "
            f"optimizer={optimizer.name!r}"
        )
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        raise ValueError(
            "`optimizer` must not be a LossScaleOptimizer: wrap the other way "
            "round, `keras.optimizers.LossScaleOptimizer(LayerwiseOptimizer("
            "inner, rules))`, so loss scaling stays outermost. Received: "
            f"optimizer={optimizer.name!r}"
        )
    if internals.is_multi_optimizer(optimizer):
        raise ValueError(
            "`optimizer` must not be a MultiOptimizer: LayerwiseOptimizer "
            "replaces it. Use one inner optimizer and express each group's "
            "learning rate as `Rule(match, lr_scale=group_lr / base_lr)`. "
            f"Received: optimizer={optimizer.name!r}"
        )
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        raise TypeError(
            "`optimizer` must be a `keras.optimizers.Optimizer` instance. "
            f"Received: optimizer={optimizer!r}"
        )
    if optimizer.built:
        raise ValueError(
            "`optimizer` must not be built yet: LayerwiseOptimizer builds it "
            "on the variables it trains (frozen variables get no slots). "
            f"Pass a fresh optimizer. Received: optimizer={optimizer.name!r}"
        )
    owner = getattr(optimizer, "_layerwise_owner", None)
    if owner is not None and owner() is not None:
        raise ValueError(
            "`optimizer` already belongs to another LayerwiseOptimizer "
            f"({owner().name!r}): it holds that one's slots and step count. "
            f"Pass a fresh optimizer. Received: optimizer={optimizer.name!r}"
        )
    if optimizer.use_ema and optimizer.ema_overwrite_frequency:
        raise ValueError(
            "LayerwiseOptimizer takes over the inner optimizer's `use_ema` "
            "but not `ema_overwrite_frequency`: swap the averages in with "
            "`layerwise.ema_weights(model)` or "
            "`layerwise.callbacks.EvaluateWithEMA`. Received: ema_overwrite_frequency="
            f"{optimizer.ema_overwrite_frequency!r}"
        )


def _take_over_inner(optimizer, accumulate_steps, ema, ema_overwrite_at_end):
    """The inner optimizer's `gradient_accumulation_steps` and `use_ema`
    become this optimizer's `accumulate_steps` and `ema` (with Keras'
    overwrite at the end of `fit`); the inner one then keeps neither, so it
    creates no second set of accumulators or averages."""
    inner_steps = optimizer.gradient_accumulation_steps
    if inner_steps and accumulate_steps not in (None, inner_steps):
        raise ValueError(
            "`accumulate_steps` and the inner optimizer's "
            "`gradient_accumulation_steps` disagree. Received: "
            f"accumulate_steps={accumulate_steps}, "
            f"gradient_accumulation_steps={inner_steps}"
        )
    if optimizer.use_ema and ema not in (None, optimizer.ema_momentum):
        raise ValueError(
            "`ema` and the inner optimizer's `ema_momentum` disagree. "
            f"Received: ema={ema}, ema_momentum={optimizer.ema_momentum}"
        )
    # Checked both before changing either: a failed call changes nothing.
    if inner_steps:
        accumulate_steps = inner_steps
        optimizer.gradient_accumulation_steps = None
    if optimizer.use_ema:
        ema = optimizer.ema_momentum
        ema_overwrite_at_end = True
        optimizer.use_ema = False
    return accumulate_steps, ema, ema_overwrite_at_end


_LOG_STATS = ("lr", "grad_norm", "update_ratio")


def _check_log(value):
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, (list, tuple)) or any(s not in _LOG_STATS for s in value):
        raise ValueError(
            f"`log` must be a tuple of names among {_LOG_STATS}. Received: "
            f"log={value!r}"
        )
    return tuple(dict.fromkeys(value))


def _check_accumulate_steps(value):
    if value is None:
        return 1
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            "`accumulate_steps` must be an int >= 1 (1: no accumulation). "
            f"Received: accumulate_steps={value!r}"
        )
    return value


def _check_ema(value):
    if value is None:
        return None
    if not _validation.is_real_number(value) or not 0 <= value < 1:
        raise ValueError(
            f"`ema` must be a momentum in [0, 1), or None. Received: ema={value!r}"
        )
    return float(value)


def _safe(name):
    """`name` with only the characters Keras allows in variable names."""
    return "".join(c if c.isalnum() or c in "_-." else "_" for c in name)


def _bind_rules(rules, add_scale_variable):
    if isinstance(rules, rules_lib.Rule):
        rules = [rules]
    if not isinstance(rules, (list, tuple)):
        raise TypeError(
            f"`rules` must be a list of `Rule`s. Received: rules={rules!r}"
        )
    for rule in rules:
        if not isinstance(rule, rules_lib.Rule):
            raise TypeError(
                "`rules` must be a list of `layerwise.Rule` objects. "
                f"Received an element: {rule!r}"
            )
    names = [rule.name or f"rule_{i}" for i, rule in enumerate(rules)]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(
            f"Rule names must be unique. Received duplicate names: {duplicates}"
        )
    bound = []
    for name, rule in zip(names, rules):
        variable = None
        if rule.has_constant_scale:
            variable = add_scale_variable(name, rule._lr_scale)
        bound.append(rule.bind(name, variable))
    return tuple(bound)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class LayerwiseOptimizer(keras.optimizers.Optimizer):
    """Wraps one Keras optimizer and applies per-variable rules to it.

    Each variable follows the inner optimizer's update at
    `learning_rate * lr_scale`, where `lr_scale` is the product of the
    multipliers of the rules that match it; this is exact for every update
    rule, adaptive ones included. Rules can also freeze variables (no update,
    no optimizer slots), override the decoupled weight decay, and transform
    gradients before the update.

    Gradients are processed in this order: (1) loss-scale unscaling (the
    inner optimizer's `loss_scale_factor`, or an outer
    `keras.optimizers.LossScaleOptimizer`), (2) `gradient_hook` over all
    non-frozen gradients, (3) each rule's `gradient` transforms, rule by rule
    in rule order, (4) the inner optimizer's own `clipnorm`, `clipvalue` or
    `global_clipnorm`, computed over all non-frozen variables together as a
    single optimizer would, (5) decoupled weight decay at the group's
    learning rate, then (6) the update.

    Args:
        optimizer: The inner `keras.optimizers.Optimizer` (unbuilt): SGD,
            Adam, AdamW, Nadam, Lion, ... It owns the base learning rate,
            the iteration counter, clipping and weight decay.
        rules: A list of `layerwise.Rule`. See `Rule` for how several rules
            matching one variable merge.
        gradient_hook: Optional callable `(grads, variables) -> grads` that
            sees every non-frozen gradient at once, like overriding Keras 2's
            `get_gradients`.
        strict: If `True` (default), building fails when a rule matches no
            variable.
        accumulate_steps: Optional int `k`: gradients of `k` consecutive
            micro-batches are averaged and applied as one step, exactly as
            one `k` times larger batch with a mean-reduced loss (transforms,
            clipping, decay, step count and EMA see only real steps). One
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
            the inner optimizer brought `use_ema`). By default the raw
            weights are kept.
        skip_nonfinite: If `True`, a step whose gradients (of non-frozen
            variables, before any transform) contain NaN or Inf is skipped
            entirely: weights, slots, accumulators, averages and step counts
            stay unchanged, and `skipped_steps` counts it (also in `fit`'s
            logs with `layerwise.callbacks.LogDiagnostics`). By default, as
            in Keras, non-finite gradients reach the update.
        skip_frozen_gradients: If `True` (default), frozen variables are
            marked `trainable=False` when the optimizer is built (and marked
            back when `set_frozen` unfreezes them), so Keras' trainer
            computes no gradient for them: freezing by a rule costs what
            `layer.trainable = False` costs. The model's
            `trainable_variables` then lists only what the optimizer trains.
            `False` leaves the variables' flags alone (their gradients are
            computed and dropped).
        log: Per-rule diagnostics computed at every real step, among
            `"lr"` (the inner learning rate times the rule's multiplier),
            `"grad_norm"` (L2 norm of the rule's processed gradients, as the
            update sees them) and `"update_ratio"` (norm of the step's weight
            change over the norm of the weights before it), over the rule's
            non-frozen variables. Read them with `diagnostics()`, or in
            `fit`'s logs as `"<stat>/<rule>"` with
            `layerwise.callbacks.LogDiagnostics`. Nothing is computed when
            empty (the default).
        name: Optional name of the optimizer.

    Example:

    >>> import keras, layerwise as lw
    >>> inputs = keras.Input((4,))
    >>> hidden = keras.layers.Dense(8, name="body")(inputs)
    >>> model = keras.Model(inputs, keras.layers.Dense(2, name="head")(hidden))
    >>> opt = lw.LayerwiseOptimizer(
    ...     keras.optimizers.Adam(1e-3),
    ...     rules=[lw.Rule("body/.*", lr_scale=0.1, name="body")])
    >>> model.compile(optimizer=opt, loss="mse")
    >>> opt.build(model.trainable_variables)
    >>> opt.set_lr_scale("body", 0.2)
    >>> opt.get_rule("body").lr_scale
    0.2
    """

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
        skip_nonfinite=False,
        skip_frozen_gradients=True,
        log=(),
        name=None,
        **kwargs,
    ):
        for arg in _INNER_ONLY_ARGS:
            if arg in kwargs:
                raise ValueError(
                    f"LayerwiseOptimizer does not take `{arg}`: set it on the "
                    f"inner optimizer. Received: {arg}={kwargs[arg]!r}"
                )
        if kwargs:
            raise ValueError(f"Argument(s) not recognized: {kwargs}")
        _check_inner(optimizer)
        if gradient_hook is not None:
            if not callable(gradient_hook):
                raise TypeError(
                    "`gradient_hook` must be a callable `(grads, variables) "
                    f"-> grads`. Received: gradient_hook={gradient_hook!r}"
                )
            _validation.check_arity(gradient_hook, 2, "gradient_hook")
        if not isinstance(strict, bool):
            raise TypeError(f"`strict` must be a bool. Received: strict={strict!r}")
        for arg, value in (
            ("ema_bias_correction", ema_bias_correction),
            ("ema_overwrite_at_end", ema_overwrite_at_end),
            ("skip_nonfinite", skip_nonfinite),
            ("skip_frozen_gradients", skip_frozen_gradients),
        ):
            if not isinstance(value, bool):
                raise TypeError(f"`{arg}` must be a bool. Received: {arg}={value!r}")
        accumulate_steps = _check_accumulate_steps(accumulate_steps)
        log = _check_log(log)
        ema = _check_ema(ema)
        if optimizer.gradient_accumulation_steps:
            _check_accumulate_steps(optimizer.gradient_accumulation_steps)
        # Validate every rule before creating any state, so a bad rule list
        # leaves nothing half-built.
        _bind_rules(rules, lambda name, value: None)

        super().__init__(learning_rate=0.0, name=name)
        # After the base class validated `name`: nothing below can fail
        # before the inner optimizer is changed.
        accumulate_steps, ema, ema_overwrite_at_end = _take_over_inner(
            optimizer,
            None if accumulate_steps == 1 else accumulate_steps,
            ema,
            ema_overwrite_at_end,
        )
        # The inner optimizer owns the step counter and the learning rate;
        # drop the base class's unused copies from this optimizer's state.
        internals.untrack_variable(self, self._iterations)
        internals.untrack_variable(self, self._learning_rate)
        self.inner_optimizer = optimizer
        # Marks the inner optimizer as taken (a weak reference: no cycle).
        optimizer._layerwise_owner = weakref.ref(self)
        self.gradient_hook = gradient_hook
        self.strict = strict
        self.accumulate_steps = accumulate_steps or 1
        self.ema = ema
        self.ema_bias_correction = ema_bias_correction
        self.ema_overwrite_at_end = ema_overwrite_at_end
        self.use_ema = ema is not None
        self._micro_step = None
        self._accumulation_phase = None
        self._accumulators = {}
        self._averages = {}
        self._rules = _bind_rules(rules, self._add_scale_variable)
        self.log = log
        self.skip_nonfinite = skip_nonfinite
        self.skip_frozen_gradients = skip_frozen_gradients
        # Keys of the variables this optimizer marked `trainable=False`.
        self._marked_untrainable = set()
        self._skipped_steps = None
        if skip_nonfinite:
            self._skipped_steps = self._add_scalar("skipped_steps", "int32")
        self._log_variables = {
            f"{stat}/{rule.name}": self._add_scalar(f"log_{stat}_{_safe(rule.name)}")
            for stat in log
            for rule in self._rules
        }
        self._plan = None
        # Optimizers holding slots: the inner one, then one per set of
        # variables unfrozen at runtime (see `set_frozen`).
        self._updaters = [optimizer]
        self._step_states = [()]
        # Variable paths of each runtime-unfrozen set, saved in the config so
        # a loaded optimizer rebuilds the same optimizers (and state layout).
        self._unfrozen_paths = []
        # Once `set_frozen` ran after build, the inner optimizer's slots no
        # longer follow from the rules: the config records its variables.
        self._inner_paths = None
        self._updater_of = {}

    def _add_scale_variable(self, rule_name, value):
        return self._add_scalar(f"lr_scale_{_safe(rule_name)}", value=value)

    def _add_scalar(self, name, dtype="float32", value=0):
        """A scalar of this optimizer's own state (multiplier, counter or
        diagnostic), written by the first replica only."""
        return self.add_variable(
            shape=(),
            initializer=keras.initializers.Constant(value),
            dtype=dtype,
            aggregation="only_first_replica",
            name=name,
        )

    # ------------------------------------------------------------------
    # The inner optimizer's public face.

    @property
    def variables(self):
        variables = self._variables + self.inner_optimizer.variables
        for updater in self._updaters[1:]:
            variables = variables + updater.variables
        return variables

    @property
    def iterations(self):
        return self.inner_optimizer.iterations

    @property
    def learning_rate(self):
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        self.inner_optimizer.learning_rate = learning_rate

    def scale_loss(self, loss):
        return self.inner_optimizer.scale_loss(loss)

    def finalize_variable_values(self, var_list):
        # Called by `fit` at its end: Keras' `use_ema` semantics when asked.
        if self.ema_overwrite_at_end and self.built:
            for variable, average in self.ema_pairs():
                variable.assign(average)

    # ------------------------------------------------------------------
    # Rules.

    @property
    def rules(self):
        """The optimizer's rules (its own copies, named)."""
        return self._rules

    @property
    def plan(self):
        """The per-variable `Plan` (available once built)."""
        if self._plan is None:
            raise ValueError(
                "The optimizer is not built yet: call `fit` or "
                "`optimizer.build(model.trainable_variables)` first."
            )
        return self._plan

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
        state, exactly as a new inner optimizer would: zero slots and a step
        count of its own starting at 0 (Adam's bias correction restarts),
        at the shared learning rate times its multipliers. The variables
        unfrozen by one call share a new optimizer of the inner optimizer's
        class; whatever slots they held before stay allocated but unused,
        so each unfreeze of a variable adds one set of slots. Freezing keeps
        a variable's slots. The change is recorded in the
        optimizer's config, so a saved model resumes with the same state.

        A compiled train step must be retraced to see the change:
        `layerwise.callbacks.GradualUnfreezing` does that in `fit`; in a
        custom loop, re-create the `tf.function` / `jax.jit` step.

        Args:
            name: The rule's name.
            frozen: `True` to freeze, `False` to unfreeze.
        """
        rule = self.get_rule(name)
        if not isinstance(frozen, bool):
            raise TypeError(
                f"`frozen` must be True or False. Received: frozen={frozen!r}"
            )
        previous = rule.frozen
        rule.frozen = frozen
        if not self.built:
            return
        if self._inner_paths is None:
            self._inner_paths = [
                v.path for v in internals.built_variables(self.inner_optimizer)
            ]
        try:
            plan = self._make_plan(internals.built_variables(self))
            self._check_gradient_processing(plan)
            was_trainable = {self._var_key(p.variable) for p in self._plan.trainable}
            unfrozen = [
                p.variable
                for p in plan.trainable
                if self._var_key(p.variable) not in was_trainable
            ]
            if unfrozen:
                self._add_updater(unfrozen, at_runtime=True)
                plan = self._make_plan(internals.built_variables(self))
        except BaseException:
            rule.frozen = previous
            raise
        self._set_plan(plan)

    def updater_name(self, index):
        """The name of the optimizer holding slots for plan updater `index`."""
        return self._updaters[index].name

    def _check_gradient_processing(self, plan):
        """On JAX, runs the hook and transforms on symbolic gradients, so a
        wrong return value fails here, before any state exists or is handed
        to a traced step (where Keras has already taken the values)."""
        variables = plan.trainable_variables()
        if not variables or (self.gradient_hook is None and not plan.transform_steps):
            return

        def process(*grads):
            return update_lib.process_gradients(
                plan, self._rules, self.gradient_hook, self.inner_optimizer,
                list(range(len(variables))), list(grads), variables,
            )

        try:
            trainer_internals.check_before_trace(
                process, *[keras.KerasTensor(v.shape, v.dtype) for v in variables]
            )
        except update_lib.InvalidGradientsError:
            raise
        except Exception:
            # A hook that needs concrete values (e.g. converts to NumPy in an
            # eager loop) cannot run symbolically; the real step checks it.
            pass

    def _make_plan(self, variables):
        return plan_lib.make_plan(
            self._rules,
            variables,
            self._default_weight_decay,
            self.strict,
            updater_of=lambda v: self._updater_of.get(self._var_key(v), 0),
        )

    def _set_plan(self, plan):
        self._plan = plan
        if self.skip_frozen_gradients:
            for p in plan.variables:
                key = self._var_key(p.variable)
                if p.frozen and p.variable.trainable:
                    p.variable.trainable = False
                    self._marked_untrainable.add(key)
                elif not p.frozen and key in self._marked_untrainable:
                    p.variable.trainable = True
                    self._marked_untrainable.discard(key)
        self._trainable_position = {
            self._var_key(p.variable): i for i, p in enumerate(plan.trainable)
        }

    def _add_updater(self, variables, paths=None, at_runtime=False):
        """A fresh optimizer of the inner optimizer's class for `variables`."""
        inner = self.inner_optimizer
        config = inner.get_config()
        config["name"] = f"{inner.name}_unfrozen_{len(self._updaters)}"
        with internals.variable_creation_scope(inner):
            updater = type(inner).from_config(config)
            updater.build(variables)
            internals.leave_all_reduce_to_caller(updater)
            self._add_accumulators_and_averages(variables, at_runtime)
        internals.track_step_state(updater)
        index = len(self._updaters)
        self._updaters.append(updater)
        self._step_states.append(tuple(internals.step_state(updater)))
        self._unfrozen_paths.append(
            list(paths) if paths is not None else [v.path for v in variables]
        )
        for variable in variables:
            self._updater_of[self._var_key(variable)] = index
        return updater

    def _add_accumulators_and_averages(self, variables, at_runtime=False):
        """Per slot-holding variable: an accumulator if accumulating, an
        average if keeping an EMA."""
        for variable in variables:
            key = self._var_key(variable)
            if self.accumulate_steps > 1:
                self._accumulators[key] = self.add_variable_from_reference(
                    variable, "accumulator"
                )
            if self.ema is not None:
                average = self.add_variable_from_reference(variable, "average")
                if at_runtime:
                    # The variable was frozen so far: its average is its
                    # value (a copy: two JAX variables must not share one
                    # buffer). At build, the first step's update copies the
                    # weights instead, which also works inside a traced step.
                    average.assign(ops.copy(variable.value))
                self._averages[key] = average

    def ema_pairs(self):
        """`(variable, average)` for every variable that has an EMA."""
        return [
            (v, self._averages[self._var_key(v)])
            for v in internals.built_variables(self)
            if self._var_key(v) in self._averages
        ]

    def summary(self, print_fn=None):
        """Prints, per variable: rules, lr scale, effective lr, decay,
        transforms and whether it is frozen."""
        summary_lib.print_summary(self, print_fn=print_fn)

    # ------------------------------------------------------------------
    # Build and apply.

    def _default_weight_decay(self, variable):
        inner = self.inner_optimizer
        if inner.weight_decay and internals.uses_weight_decay(inner, variable):
            return float(inner.weight_decay)
        return None

    def build(self, variables):
        if self.built:
            return
        variables = list(variables)
        saved_sets = self._unfrozen_paths
        set_of_path = {
            path: k + 1 for k, paths in enumerate(saved_sets) for path in paths
        }
        self._updater_of = {
            self._var_key(v): set_of_path[v.path]
            for v in variables
            if v.path in set_of_path
        }
        plan = self._make_plan(variables)
        self._check_gradient_processing(plan)
        # The base build would create Keras' own averages for every variable;
        # ours exist only for non-frozen ones (`_add_accumulators_and_averages`).
        self.use_ema = False
        super().build(variables)
        self.use_ema = self.ema is not None
        if self._inner_paths is None:
            inner_variables = [p.variable for p in plan.trainable if p.updater == 0]
        else:
            inner_paths = set(self._inner_paths)
            inner_variables = [v for v in variables if v.path in inner_paths]
        if self.accumulate_steps > 1:
            self._micro_step = self._add_scalar("micro_step", "int32")
        self.inner_optimizer.build(inner_variables)
        internals.leave_all_reduce_to_caller(self.inner_optimizer)
        self._add_accumulators_and_averages(inner_variables)
        internals.track_step_state(self.inner_optimizer)
        self._step_states = [tuple(internals.step_state(self.inner_optimizer))]
        self._unfrozen_paths = []
        for k, paths in enumerate(saved_sets):
            self._add_updater(
                [v for v in variables if set_of_path.get(v.path) == k + 1], paths
            )
        self._set_plan(plan)
        self.built = True

    def _variables_for(self, grads):
        """The variables `grads` belong to when the caller does not say:
        all the built variables, or, once frozen ones are marked
        untrainable, the ones still trainable (the trainer's order)."""
        built = internals.built_variables(self)
        if len(grads) == len(built):
            return built
        trainable = [v for v in built if v.trainable]
        if len(grads) == len(trainable):
            return trainable
        raise ValueError(
            "`grads` must have one entry per variable the optimizer was "
            f"built with ({len(built)}), or per one still trainable "
            f"({len(trainable)}). Received {len(grads)} gradients."
        )

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
        targets = self._variables_for(list(trainable_variables))
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
        if trainable_variables is None:
            if not self.built:
                raise ValueError(
                    "When passing `grads` without `trainable_variables`, the "
                    "optimizer must already be built: call "
                    "`optimizer.build(trainable_variables)` first."
                )
            trainable_variables = self._variables_for(grads)
        else:
            trainable_variables = list(trainable_variables)
            if not self.built:
                self.build(trainable_variables)
            self._check_variables_are_known(trainable_variables)
        if len(grads) != len(trainable_variables):
            raise ValueError(
                "`grads` must have one entry per variable. Received "
                f"{len(grads)} gradients for {len(trainable_variables)} "
                "variables."
            )
        with keras.name_scope(self.name), internals.update_context():
            positions, grads, variables = self._trainable_subset(
                grads, trainable_variables
            )
            # Under tf.distribute, sum over replicas first: the hook,
            # transforms, clipping and the non-finite check see the global
            # gradient, as on one device (Keras clips per replica).
            grads, reduced = internals.all_reduce_across_replicas(grads)
            conditional_accumulation = (
                self.accumulate_steps > 1 and self._accumulation_phase is None
            )
            if reduced and (self.skip_nonfinite or conditional_accumulation):
                raise ValueError(
                    "`skip_nonfinite` and `accumulate_steps` are not supported "
                    "under a tf.distribute strategy with several replicas: "
                    "TensorFlow cannot synchronize replicas inside the "
                    "conditional they need. Use them on one device, with "
                    "the JAX backend's `keras.distribution`, or, for "
                    "`accumulate_steps`, with the callback "
                    "`layerwise.callbacks.SplitAccumulation()` (no "
                    "conditional). Received: "
                    f"skip_nonfinite={self.skip_nonfinite}, "
                    f"accumulate_steps={self.accumulate_steps}"
                )
            if not self.skip_nonfinite:
                self._accumulate_or_step(positions, grads, variables)
                return
            # A non-finite gradient skips the whole step: weights, slots,
            # accumulators, averages and counters stay as they were.
            finite = ops.all(
                ops.stack([ops.all(ops.isfinite(g)) for g in grads] or [True])
            )
            internals.run_one_branch(
                finite,
                lambda: self._accumulate_or_step(positions, grads, variables),
                lambda: self._skipped_steps.assign_add(1),
                self.variables + list(variables),
            )

    def _accumulate_or_step(self, positions, grads, variables):
        if self.accumulate_steps == 1:
            self._step(positions, grads, variables)
            return
        accumulation_lib.accumulate_or_update(
            self._micro_step,
            self.accumulate_steps,
            [self._accumulators[self._var_key(v)] for v in variables],
            grads,
            lambda mean: self._step(positions, mean, variables),
            state=self.variables + list(variables),
            phase=self._accumulation_phase,
        )

    @contextlib.contextmanager
    def _traced_as(self, phase):
        """Traces (or runs) the steps inside as accumulation micro-steps
        (`"micro"`) or real steps (`"real"`), without the run-time
        conditional; for `layerwise.callbacks.SplitAccumulation`, which
        knows which step each batch is."""
        previous, self._accumulation_phase = self._accumulation_phase, phase
        try:
            yield
        finally:
            self._accumulation_phase = previous

    def _step(self, positions, grads, variables):
        """One real step: process, decay, update, average, count."""
        inner = self.inner_optimizer
        if grads:
            if inner.loss_scale_factor is not None:
                grads = [g / inner.loss_scale_factor for g in grads]
            grads = update_lib.process_gradients(
                self._plan, self._rules, self.gradient_hook, inner,
                positions, grads, variables,
            )
            before = None
            if "update_ratio" in self.log:
                before = [ops.copy(v.value) for v in variables]
            update_lib.apply_updates(
                self._plan, self._rules, self._updaters, self._step_states,
                positions, grads, variables,
            )
            for variable in variables:
                if variable.constraint is not None:
                    variable.assign(variable.constraint(variable))
            if self.log:
                self._record_diagnostics(positions, grads, variables, before)
        step = internals.iterations_variable(inner)
        if self.ema is not None:
            ema_lib.update_averages(
                [(v, self._averages[self._var_key(v)]) for v in variables],
                self.ema,
                step,
                self.ema_bias_correction,
            )
        step.assign_add(1)

    def _record_diagnostics(self, positions, grads, variables, before):
        """Writes this step's per-rule statistics into the log variables."""
        step = internals.iterations_variable(self.inner_optimizer)
        base_lr = ops.cast(internals.current_learning_rate(self.inner_optimizer), "float32")
        members = {rule.name: [] for rule in self._rules}
        for i, position in enumerate(positions):
            for name in self._plan.trainable[position].rules:
                members[name].append(i)

        def norm(tensors):
            if not tensors:
                return ops.zeros((), "float32")
            return ops.sqrt(
                sum(ops.sum(ops.square(ops.cast(t, "float32"))) for t in tensors)
            )

        for rule in self._rules:
            idx = members[rule.name]
            values = {}
            if "lr" in self.log:
                scale = 1.0
                if rule._lr_scale is not None:
                    scale = ops.cast(rule.scale_value(step), "float32")
                values["lr"] = ops.multiply(base_lr, scale)
            if "grad_norm" in self.log:
                values["grad_norm"] = norm([grads[i] for i in idx])
            if "update_ratio" in self.log:
                change = norm([ops.subtract(variables[i].value, before[i]) for i in idx])
                weight = norm([before[i] for i in idx])
                values["update_ratio"] = ops.divide(
                    change, ops.maximum(weight, keras.backend.epsilon())
                )
            for stat, value in values.items():
                self._log_variables[f"{stat}/{rule.name}"].assign(value)

    def diagnostics(self):
        """The last step's per-rule statistics (see `log`), as floats.

        Returns:
            A dict `{"<stat>/<rule>": value}`, empty when `log` is empty.
        """
        return {
            name: float(ops.convert_to_numpy(variable))
            for name, variable in self._log_variables.items()
        }

    @property
    def log_variables(self):
        """The variables holding the diagnostics, by log name (with
        `skipped_steps` when `skip_nonfinite` is on)."""
        variables = dict(self._log_variables)
        if self._skipped_steps is not None:
            variables["skipped_steps"] = self._skipped_steps
        return variables

    @property
    def skipped_steps(self):
        """How many steps `skip_nonfinite` skipped (an int variable)."""
        if self._skipped_steps is None:
            raise ValueError(
                "`skipped_steps` exists only with `skip_nonfinite=True`."
            )
        return self._skipped_steps

    def _trainable_subset(self, grads, variables):
        """Drops frozen variables and missing gradients.

        Returns positions in `plan.trainable`, gradients and variables.
        """
        kept = []
        missing = []
        for grad, variable in zip(grads, variables):
            position = self._trainable_position.get(self._var_key(variable))
            if position is None:
                continue  # Frozen: no gradient processing, no update.
            if grad is None:
                missing.append(variable.path)
                continue
            if not ops.is_tensor(grad):
                grad = ops.convert_to_tensor(grad, dtype=variable.dtype)
            kept.append((position, grad, variable))
        if missing:
            internals.warn_missing_gradients(missing)
        if not kept:
            return [], [], []
        positions, grads, variables = (list(x) for x in zip(*kept))
        return internals.overwrite_with_gradient(self, positions, grads, variables)

    # ------------------------------------------------------------------
    # Serialization.

    def set_weights(self, weights):
        if not self.built:
            raise ValueError(
                "The optimizer must be built before `set_weights()`: call "
                "`optimizer.build(trainable_variables)` first."
            )
        variables = self.variables
        if len(weights) != len(variables):
            raise ValueError(
                f"`weights` must have {len(variables)} entries, one per "
                f"optimizer variable. Received: {len(weights)} entries."
            )
        for variable, weight in zip(variables, weights):
            if tuple(variable.shape) != tuple(weight.shape):
                raise ValueError(
                    f"Optimizer variable {variable.path} has shape "
                    f"{variable.shape}, incompatible with {weight.shape}."
                )
        for variable, weight in zip(variables, weights):
            variable.assign(weight)

    def get_config(self):
        return {
            "name": self.name,
            "optimizer": keras.saving.serialize_keras_object(self.inner_optimizer),
            "rules": [keras.saving.serialize_keras_object(r) for r in self._rules],
            "gradient_hook": keras.saving.serialize_keras_object(self.gradient_hook),
            "strict": self.strict,
            "accumulate_steps": self.accumulate_steps,
            "ema": self.ema,
            "ema_bias_correction": self.ema_bias_correction,
            "ema_overwrite_at_end": self.ema_overwrite_at_end,
            "skip_nonfinite": self.skip_nonfinite,
            "skip_frozen_gradients": self.skip_frozen_gradients,
            "log": list(self.log),
            "inner_built_on": self._inner_paths,
            "unfrozen_at_runtime": [list(p) for p in self._unfrozen_paths],
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        optimizer = keras.saving.deserialize_keras_object(
            config.pop("optimizer"), custom_objects=custom_objects
        )
        rules = [
            keras.saving.deserialize_keras_object(r, custom_objects=custom_objects)
            for r in config.pop("rules")
        ]
        hook = config.pop("gradient_hook", None)
        if hook is not None:
            hook = keras.saving.deserialize_keras_object(
                hook, custom_objects=custom_objects
            )
        unfrozen = config.pop("unfrozen_at_runtime", [])
        inner_paths = config.pop("inner_built_on", None)
        instance = cls(optimizer, rules, gradient_hook=hook, **config)
        instance._unfrozen_paths = [list(p) for p in unfrozen]
        instance._inner_paths = inner_paths
        return instance


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
