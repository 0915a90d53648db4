"""Gradient processing before the update: hook, rule transforms, clipping.

Runs once per real optimizer step (after accumulation), on the gradients
of the non-frozen variables present this step, in this order:

1. `gradient_hook(grads, variables)` over all of them;
2. each rule's `gradient` transforms on the rule's variables, rule by rule
   in rule order;
3. the inner optimizer's `clipnorm` / `clipvalue` / `global_clipnorm`
   over all of them (one global norm, as a single optimizer computes it);
4. each rule optimizer's own clipping over the variables it updates (as
   Keras' `MultiOptimizer` clips each sub-optimizer's gradients).
"""

import keras

from layerwise._internals import optimizers as internals
from layerwise._internals import trainers as trainer_internals
from layerwise.optim import symbolic

# What a gradient hook or transform returning something other than one
# gradient of the right shape and dtype per variable raises.
InvalidGradientsError = symbolic.InvalidOutputError


def unscale(optimizer, grads):
    """Undoes the inner optimizer's `loss_scale_factor`."""
    if optimizer.loss_scale_factor is None:
        return grads
    return [g / optimizer.loss_scale_factor for g in grads]


def process_gradients(plan, rules, gradient_hook, optimizers, positions, grads, variables):
    """Hook, then rule transforms in rule order, then clipping.

    Args:
        plan: The optimizer's `Plan`.
        rules: The optimizer's rules.
        gradient_hook: Optional callable `(grads, variables) -> grads`.
        optimizers: The inner optimizer, then the rules' optimizers, by
            plan index (their clipping settings are applied).
        positions: Each gradient's position in `plan.trainable`.
        grads: Gradients of the non-frozen variables present this step.
        variables: The matching variables.

    Returns:
        The processed gradients.
    """
    grads = list(grads)
    if gradient_hook is not None:
        new = gradient_hook(list(grads), list(variables))
        grads = symbolic.checked(new, grads, variables, "gradient_hook", "gradients")
    index_of = {p: i for i, p in enumerate(positions)}
    for rule_index, rule_positions in plan.transform_steps:
        idx = [index_of[p] for p in rule_positions if p in index_of]
        if not idx:
            continue
        sub_grads = [grads[i] for i in idx]
        sub_vars = [variables[i] for i in idx]
        rule = rules[rule_index]
        for transform in rule.gradient:
            sub_grads = symbolic.checked(
                transform(sub_grads, sub_vars),
                sub_grads,
                sub_vars,
                f"a gradient transform of rule {rule.name!r} ({transform!r})",
                "gradients",
            )
        for i, g in zip(idx, sub_grads):
            grads[i] = g
    grads = list(internals.clip_gradients(optimizers[0], grads))
    for index, optimizer in enumerate(optimizers[1:], start=1):
        if not _clips(optimizer):
            continue
        idx = [index_of[p] for p in plan.positions_of_optimizer(index) if p in index_of]
        if idx:
            clipped = internals.clip_gradients(optimizer, [grads[i] for i in idx])
            for i, g in zip(idx, clipped):
                grads[i] = g
    return grads


def check_symbolically(plan, rules, gradient_hook, optimizers):
    """On JAX, runs the hook and transforms on symbolic gradients, so a
    wrong return value fails when the plan is made, before any state exists
    or is handed to a traced step (where Keras has already taken the
    values). Elsewhere the step itself fails before any assignment."""
    variables = plan.trainable_variables()
    if not variables or (gradient_hook is None and not plan.transform_steps):
        return

    def process(*grads):
        return process_gradients(
            plan, rules, gradient_hook, optimizers,
            list(range(len(variables))), list(grads), variables,
        )

    try:
        trainer_internals.check_before_trace(
            process, *[keras.KerasTensor(v.shape, v.dtype) for v in variables]
        )
    except InvalidGradientsError:
        raise
    except Exception:
        # A hook that needs concrete values (e.g. converts to NumPy in an
        # eager loop) cannot run symbolically; the real step checks it.
        pass


def _clips(optimizer):
    return bool(optimizer.clipnorm or optimizer.clipvalue or optimizer.global_clipnorm)

