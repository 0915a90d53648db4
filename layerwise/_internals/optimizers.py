"""Keras optimizer internals `LayerwiseOptimizer` relies on.

`LayerwiseOptimizer` drives Keras optimizers below their public `apply()`:
it calls each optimizer's own update once per group of variables sharing a
learning rate, and each optimizer's own weight decay at that rate. That
needs a handful of private methods and attributes of
`keras.optimizers.Optimizer` (and of `keras.optimizers.Muon`). They are
named here and nowhere else, and `tests/internals/test_optimizers.py` pins
each one's signature: if Keras moves one, that test fails and this module
(only this module) is adapted.
"""

import contextlib
import warnings

import keras

# Direct attributes of every Keras optimizer that are not per-step state.
_BOOKKEEPING_ATTRIBUTES = ("_iterations", "_learning_rate")


# ----------------------------------------------------------------------
# The update.


def backend_update_step(optimizer, grads, variables, learning_rate):
    """Runs the optimizer's update rule on `variables` at `learning_rate`.

    This is the backend's collective update: the fused `torch._foreach_*`
    kernels on torch, the `tf.distribute`-aware update on TensorFlow, a loop
    of `update_step` on JAX. It neither clips nor decays nor counts the step.
    """
    optimizer._backend_update_step(grads, variables, learning_rate)


def _keras_decay_rules():
    # The backend's `_apply_weight_decay` (TensorFlow's and torch's override
    # the base one) and Muon's, which routes the coefficient per variable.
    return (
        keras.optimizers.Optimizer._apply_weight_decay,
        keras.optimizers.Muon._apply_weight_decay,
    )


def has_keras_decay_rule(optimizer):
    """Whether `optimizer` decays with Keras' own rule (then its
    coefficients are `decay_coefficient` and `decay_weights` applies them
    at any rate), rather than a `_apply_weight_decay` of its own."""
    return type(optimizer)._apply_weight_decay in _keras_decay_rules()


def apply_weight_decay(optimizer, variables, learning_rate):
    """The optimizer's own decoupled weight decay of `variables`, at
    `learning_rate` instead of its own rate.

    For Keras' optimizers the coefficient of each variable is the one their
    `_apply_weight_decay` would use (`exclude_from_weight_decay`, Muon's
    routing: `decay_coefficient`), applied with the same operations
    (`decay_weights`). Keras' `_apply_weight_decay` reads the rate from the
    optimizer, so it cannot run at a group's rate; a subclass with a decay
    rule of its own is run with its rate shadowed for the call (one device
    only: replicas of `tf.distribute` run it in several threads).
    """
    if has_keras_decay_rule(optimizer):
        by_coefficient = {}
        for variable in variables:
            coefficient = decay_coefficient(optimizer, variable)
            if coefficient:
                by_coefficient.setdefault(coefficient, []).append(variable)
        for coefficient, members in by_coefficient.items():
            decay_weights(optimizer, members, coefficient, learning_rate)
        return
    if _replicas() > 1:
        raise ValueError(
            f"{type(optimizer).__name__} overrides `_apply_weight_decay`, which "
            "LayerwiseOptimizer can run at a group's learning rate on one "
            "device only, not under a tf.distribute strategy with several "
            "replicas. Set its `weight_decay` to None and give the groups "
            "`Rule(..., weight_decay=...)` instead."
        )
    # `object.__setattr__`: the optimizer's own `__setattr__` would track
    # the function as state (and TensorFlow's as a checkpoint dependency).
    object.__setattr__(optimizer, "_get_current_learning_rate", lambda: learning_rate)
    try:
        optimizer._apply_weight_decay(variables)
    finally:
        object.__delattr__(optimizer, "_get_current_learning_rate")


def _replicas():
    if keras.backend.backend() != "tensorflow":
        return 1
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    return 1 if context is None else context.num_replicas_in_sync


def decay_weights(optimizer, variables, weight_decay, learning_rate):
    """Decoupled weight decay with an explicit coefficient, `v <- v - v *
    weight_decay * learning_rate`, computed with the operations of the
    optimizer's own decay: one fused `torch._foreach_mul_` for Keras' torch
    optimizers, a per-variable assignment for the others (Muon included)."""
    if keras.backend.backend() == "torch" and not isinstance(optimizer, keras.optimizers.Muon):
        import torch

        torch._foreach_mul_(
            [v.value for v in variables], 1 - weight_decay * learning_rate
        )
        return
    for variable in variables:
        lr = keras.ops.cast(learning_rate, variable.dtype)
        wd = keras.ops.cast(weight_decay, variable.dtype)
        optimizer.assign_sub(variable, variable * wd * lr)


def clip_gradients(optimizer, grads):
    """The optimizer's own `clipnorm`/`clipvalue`/`global_clipnorm`."""
    return optimizer._clip_gradients(grads)


def muon_uses_adamw(optimizer, variable):
    """Whether `optimizer` is a Keras `Muon` that updates `variable` with its
    AdamW step instead of orthogonalizing it (its private
    `_should_use_adamw`: rank other than 2, `exclude_embeddings`,
    `exclude_layers`)."""
    return isinstance(optimizer, keras.optimizers.Muon) and optimizer._should_use_adamw(variable)


def decay_coefficient(optimizer, variable):
    """The weight-decay coefficient `optimizer` applies to `variable`, or
    `None`: Keras' `exclude_from_weight_decay` and, for Muon, its routing
    (`adam_weight_decay` on the variables its AdamW path updates)."""
    if not optimizer._use_weight_decay(variable):
        return None
    if isinstance(optimizer, keras.optimizers.Muon):
        value = optimizer.adam_weight_decay if muon_uses_adamw(optimizer, variable) else optimizer.weight_decay
    else:
        value = optimizer.weight_decay
    return float(value) if value else None


def decay_settings(optimizer):
    """The coefficients `decay_coefficient` reads, comparable from one step
    to the next (a tensor coefficient by identity)."""
    values = [optimizer.weight_decay]
    if isinstance(optimizer, keras.optimizers.Muon):
        values.append(optimizer.adam_weight_decay)
    return tuple(v if v is None or isinstance(v, (int, float)) else id(v) for v in values)


def update_rule(optimizer, variable):
    """The update rule `optimizer` applies to `variable`: its class name,
    or for Muon which of its two paths updates it."""
    name = type(optimizer).__name__
    if isinstance(optimizer, keras.optimizers.Muon):
        return "Muon (AdamW path)" if muon_uses_adamw(optimizer, variable) else "Muon"
    return name


def decay_exclusion(optimizer):
    """What `exclude_from_weight_decay` set on `optimizer`: the keys of the
    excluded variables and the compiled name pattern (or `None`)."""
    return (
        set(getattr(optimizer, "_exclude_from_weight_decay", ())),
        getattr(optimizer, "_exclude_from_weight_decay_pattern", None),
    )


def copy_decay_exclusion(source, target):
    """Gives `target` the exclusions of `source` (same variables, same
    pattern), so a fresh optimizer decays as the one it replaces."""
    keys, pattern = decay_exclusion(source)
    target._exclude_from_weight_decay = set(keys)
    target._exclude_from_weight_decay_pattern = pattern
    target._exclude_from_weight_decay_cache = {}


# ----------------------------------------------------------------------
# Step count, learning rate and per-step state.


def iterations_variable(optimizer):
    """The optimizer's step counter (`iterations` divides it under Keras'
    own gradient accumulation; `LayerwiseOptimizer` takes that over)."""
    return optimizer._iterations


def learning_rate_holder(optimizer):
    """What the optimizer keeps its learning rate in: a variable for a
    float rate, else the schedule or callable itself."""
    return optimizer._learning_rate


def current_learning_rate(optimizer):
    """The learning rate at the current step (schedules evaluated)."""
    return optimizer._get_current_learning_rate()


def step_state(optimizer):
    """Per-step state the optimizer keeps outside its slots.

    Keras optimizers keep per-variable slots in lists and per-step state as a
    variable held directly as an attribute (Nadam's `_u_product`, advanced
    once per update call). Splitting one step into several group calls must
    advance such state once, so the caller restores it between groups.
    """
    return [
        value
        for name, value in sorted(vars(optimizer).items())
        if isinstance(value, keras.Variable)
        and name not in _BOOKKEEPING_ATTRIBUTES
    ]


def track_step_state(optimizer):
    """Tracks per-step state that was created without dependency tracking.

    `LossScaleOptimizer.build` builds its inner optimizer with tracking
    disabled, so an attribute such as Nadam's `_u_product` is missing from
    `optimizer.variables` and is never threaded through JAX's stateless
    step. Adding it to the optimizer's variable store fixes that.
    """
    known = {id(v) for v in optimizer.variables}
    for variable in step_state(optimizer):
        if id(variable) not in known:
            optimizer._tracker.add_to_store("variables", variable)


# ----------------------------------------------------------------------
# Variables the optimizer knows.


def built_variables(optimizer):
    """The variables `optimizer.build()` was called with."""
    return optimizer._trainable_variables


def own_variables(optimizer):
    """The variables the optimizer created itself (`add_variable`), in
    creation order, without those of optimizers it wraps."""
    return optimizer._variables


def base_counter_and_rate(optimizer):
    """The step counter and learning-rate variable Keras' base class creates
    in every optimizer's constructor."""
    return optimizer._iterations, optimizer._learning_rate


def variable_key(optimizer, variable):
    """The key Keras identifies `variable` by (`id` on most backends, the
    distributed container's unique id on TensorFlow)."""
    return optimizer._var_key(variable)


def check_variables_are_known(optimizer, variables):
    """Keras' error for variables the optimizer was not built with."""
    optimizer._check_variables_are_known(variables)


def untrack_variable(optimizer, variable):
    optimizer._untrack_variable(variable)


def is_multi_optimizer(optimizer):
    return isinstance(optimizer, keras.optimizers.MultiOptimizer)


def warn_missing_gradients(paths):
    warnings.warn(
        f"Gradients do not exist for variables {paths} when minimizing the "
        "loss. If using `model.compile()`, did you forget to provide a "
        "`loss` argument?",
        stacklevel=4,
    )


# ----------------------------------------------------------------------
# Backend switches.


def _already_reduced(grads_and_vars):
    return grads_and_vars


def leave_all_reduce_to_caller(optimizer):
    """Makes a TensorFlow optimizer's update use its gradients as given.

    Keras' TensorFlow optimizers sum the gradients over replicas inside
    `_backend_update_step`; `LayerwiseOptimizer` sums them before (see
    `all_reduce_across_replicas`), so the update must not sum again. The
    per-instance attribute shadows the method for this optimizer only, and
    keeps subclasses' own `_backend_update_step` (Nadam's) in the path.
    """
    if keras.backend.backend() == "tensorflow":
        optimizer._all_reduce_sum_gradients = _already_reduced


def track_for_checkpoints(owner, optimizer, name):
    """Makes `optimizer` a TensorFlow checkpoint dependency of `owner`.

    Keras' TensorFlow optimizers are trackable: an optimizer held in an
    attribute (as `inner_optimizer`) is saved and restored with its owner by
    `tf.train.Checkpoint`. The rule and unfrozen optimizers are held by the
    grouped update instead (in an attribute, Keras' `.keras` saving would
    store their state a second time), so they are tracked here by a name
    that is the same in every instance. Keras' `.keras` saving skips these
    dependencies. Other backends have no such checkpoints.
    """
    if keras.backend.backend() == "tensorflow":
        owner._track_trackable(optimizer, name=name, overwrite=True)


def untrack_for_checkpoints(owner, name):
    """Undoes `track_for_checkpoints(owner, ..., name)` (nothing if `name`
    is not tracked): the optimizer is dropped, and a checkpoint must
    neither save it nor keep it alive. TensorFlow's `Trackable` has no
    public way to forget a dependency: this edits its two private records.
    """
    if keras.backend.backend() != "tensorflow":
        return
    if owner._self_unconditional_dependency_names.pop(name, None) is None:
        return
    owner._self_unconditional_checkpoint_dependencies[:] = [
        reference
        for reference in owner._self_unconditional_checkpoint_dependencies
        if reference.name != name
    ]


def all_reduce_across_replicas(grads):
    """Sums `grads` over the replicas of a `tf.distribute` strategy.

    Keras' TensorFlow optimizers all-reduce inside their update, after
    clipping; `LayerwiseOptimizer` sums first so that the hook, the rule
    transforms and the clipping see the global gradient, as on one device.

    Returns:
        `(grads, reduced)`: `reduced` is `True` if a sum over more than one
        replica happened (then the update must not sum again).
    """
    if keras.backend.backend() != "tensorflow" or not grads:
        return grads, False
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return grads, False
    return list(context.all_reduce(tf.distribute.ReduceOp.SUM, list(grads))), True


def update_context():
    """The context the update runs in: torch must not record autograd ops
    for in-place updates of leaf parameters; other backends need nothing."""
    if keras.backend.backend() == "torch":
        import torch

        return torch.no_grad()
    return contextlib.nullcontext()


def variable_creation_scope(optimizer):
    """Where to create optimizer variables after training started: inside
    the optimizer's `tf.distribute` strategy on TensorFlow (mirrored
    variables), anywhere on the other backends."""
    if keras.backend.backend() == "tensorflow":
        return optimizer._distribution_strategy.scope()
    return contextlib.nullcontext()


def add_to(accumulators, grads):
    """`accumulators[i] += grads[i]`, as one fused `torch._foreach_add_` on
    torch (one kernel for all variables, as Keras' torch updates)."""
    if keras.backend.backend() == "torch":
        import torch

        torch._foreach_add_(
            [a.value for a in accumulators],
            [keras.ops.cast(g, a.dtype) for a, g in zip(accumulators, grads)],
        )
        return
    for a, g in zip(accumulators, grads):
        a.assign_add(keras.ops.cast(g, a.dtype))


def _none(fn):
    fn()


def run_one_branch(pred, true_fn, false_fn, state):
    """Runs `true_fn()` if `pred` else `false_fn()`; both assign variables.

    TensorFlow (`tf.cond`) and torch (Python `if`) run a branch's variable
    assignments as they are. A `jax.lax.cond` branch must be pure, so on JAX
    each branch runs in its own `keras.StatelessScope` over `state` (every
    variable it may read or write) and returns the new values, which are
    assigned after the `cond`. Only the taken branch executes either way.
    """
    if keras.backend.backend() != "jax":
        # Branches return nothing (an assignment's result would differ).
        keras.ops.cond(pred, lambda: _none(true_fn), lambda: _none(false_fn))
        return
    state = list({id(v): v for v in state}.values())

    def pure(fn):
        def branch():
            mapping = [(v, v.value) for v in state]
            with keras.StatelessScope(state_mapping=mapping) as scope:
                fn()
            return [scope.get_current_value(v) for v in state]

        return branch

    values = keras.ops.cond(pred, pure(true_fn), pure(false_fn))
    for variable, value in zip(state, values):
        variable.assign(value)
