"""One training step's work: process gradients, then update group by group.

This is where the learning-rate multiplier enters the update: each update
group calls the inner optimizer's own collective update with
`learning_rate * scale` (see `apply_updates`). Everything here runs inside
the compiled train step; the Python loops run at trace time only.
"""

import collections.abc

import keras
from keras import ops

from layerwise._internals import optimizers as internals


class InvalidGradientsError(TypeError, ValueError):
    """A gradient hook or transform returned something other than one
    gradient of the right shape and dtype per variable."""


def process_gradients(plan, rules, gradient_hook, inner, positions, grads, variables):
    """Hook, then rule transforms in rule order, then the inner clipping.

    Args:
        plan: The optimizer's `Plan`.
        rules: The optimizer's rules.
        gradient_hook: Optional callable `(grads, variables) -> grads`.
        inner: The inner optimizer (for its `clipnorm` & co.).
        positions: Each gradient's position in `plan.trainable`.
        grads: Gradients of the non-frozen variables present this step.
        variables: The matching variables.

    Returns:
        The processed gradients.
    """
    if gradient_hook is not None:
        new = gradient_hook(list(grads), list(variables))
        grads = _checked(new, grads, variables, "gradient_hook")
    index_of = {p: i for i, p in enumerate(positions)}
    for rule_index, rule_positions in plan.transform_steps:
        idx = [index_of[p] for p in rule_positions if p in index_of]
        if not idx:
            continue
        sub_grads = [grads[i] for i in idx]
        sub_vars = [variables[i] for i in idx]
        rule = rules[rule_index]
        for transform in rule.gradient:
            sub_grads = _checked(
                transform(sub_grads, sub_vars),
                sub_grads,
                sub_vars,
                f"a gradient transform of rule {rule.name!r} ({transform!r})",
            )
        for i, g in zip(idx, sub_grads):
            grads[i] = g
    return list(internals.clip_gradients(inner, grads))


def apply_updates(plan, rules, updaters, step_states, positions, grads, variables):
    """Decays and updates each group at `learning_rate * scale`.

    Args:
        plan: The optimizer's `Plan`.
        rules: The optimizer's rules (their multipliers are read here).
        updaters: The optimizers holding slots: the inner optimizer first
            (its learning rate and step are the base for every group), then
            one per set of variables unfrozen at runtime.
        step_states: Per updater, its per-step state variables.
        positions, grads, variables: As for `process_gradients` (on
            TensorFlow, already summed over replicas).
    """
    inner = updaters[0]
    base_lr = internals.current_learning_rate(inner)
    step = internals.iterations_variable(inner)
    index_of = {p: i for i, p in enumerate(positions)}
    scale_values = {}
    saved_states = {}
    for updater in {g.updater for g in plan.groups}:
        calls = sum(1 for g in plan.groups if g.updater == updater)
        if calls > 1 and step_states[updater]:
            saved_states[updater] = [
                ops.copy(ops.convert_to_tensor(s)) for s in step_states[updater]
            ]
    called = set()
    for group in plan.groups:
        idx = [index_of[p] for p in group.indices if p in index_of]
        if not idx:
            continue
        learning_rate = base_lr
        for rule_index in group.scale_rules:
            if rule_index not in scale_values:
                scale = rules[rule_index].scale_value(step)
                scale_values[rule_index] = ops.cast(scale, "float32")
            learning_rate = ops.multiply(learning_rate, scale_values[rule_index])
        group_vars = [variables[i] for i in idx]
        group_grads = [grads[i] for i in idx]
        if group.weight_decay:
            internals.decay_weights(
                inner, group_vars, group.weight_decay, learning_rate
            )
        if group.updater in saved_states and group.updater in called:
            # Per-step state (Nadam's `_u_product`) must advance once per
            # step, not once per group: every group starts from the same
            # pre-step value, so the last group leaves it advanced once.
            for state, value in zip(
                step_states[group.updater], saved_states[group.updater]
            ):
                state.assign(value)
        internals.backend_update_step(
            updaters[group.updater], group_grads, group_vars, learning_rate
        )
        called.add(group.updater)
    # Each optimizer holding runtime-unfrozen variables counts its own steps
    # (Adam's bias correction restarts), the inner one is counted by the caller.
    for updater in sorted(called - {0}):
        internals.iterations_variable(updaters[updater]).assign_add(1)


def _checked(new_grads, old_grads, variables, what):
    """Checks a transform's output against its input, at trace time."""
    if (
        new_grads is None
        or ops.is_tensor(new_grads)
        or not isinstance(new_grads, collections.abc.Iterable)
    ):
        raise InvalidGradientsError(
            f"{what} must return a list of gradients, one per variable. "
            f"Received: {new_grads!r}"
        )
    new_grads = list(new_grads)
    if len(new_grads) != len(old_grads):
        raise InvalidGradientsError(
            f"{what} must return one gradient per variable. Expected "
            f"{len(old_grads)}, received {len(new_grads)}."
        )
    for new, old, variable in zip(new_grads, old_grads, variables):
        if new is None or tuple(new.shape) != tuple(old.shape):
            raise InvalidGradientsError(
                f"{what} must return gradients of the variables' shapes. For "
                f"variable {variable.path!r} expected shape {tuple(old.shape)}, "
                f"received {None if new is None else tuple(new.shape)}."
            )
        if keras.backend.standardize_dtype(new.dtype) != keras.backend.standardize_dtype(old.dtype):
            raise InvalidGradientsError(
                f"{what} must keep the gradients' dtype. For variable "
                f"{variable.path!r} expected {old.dtype}, received {new.dtype}."
            )
    return new_grads
