"""Gradient processing before the update: hook, rule transforms, clipping.

Runs once per real optimizer step (after accumulation), on the gradients
of the non-frozen variables present this step, with the loss scale undone,
in this order:

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
from layerwise.optim import stage
from layerwise.optim import symbolic


class GradientProcessing(stage.Stage):
    """In: the gradients as the update sees them. A step with no gradient
    left (every variable frozen or without one) ends here, before the
    update; the step still counts.

    Args:
        rules: The optimizer's bound rules.
        gradient_hook: Optional callable `(grads, variables) -> grads`.
        updaters: The optimizer's `Updaters` (their clipping settings).
    """

    name = "gradient_processing"

    def __init__(self, rules, gradient_hook, updaters):
        self.rules = rules
        self.gradient_hook = gradient_hook
        self._updaters = updaters

    def run(self, record, proceed):
        if not record.grads:
            return
        inner = self._updaters.optimizers[0]
        if inner.loss_scale_factor is not None:
            record.grads = [g / inner.loss_scale_factor for g in record.grads]
        record.grads = self.process(record)
        proceed(record)

    def process(self, record):
        """The step's gradients after hook, rule transforms and clipping."""
        grads, variables = list(record.grads), record.variables
        if self.gradient_hook is not None:
            new = self.gradient_hook(list(grads), list(variables))
            grads = symbolic.checked(new, grads, variables, "gradient_hook", "gradients")
        for rule_index, members in record.plan.transform_steps:
            idx = record.locate(members)
            if not idx:
                continue
            sub_grads = [grads[i] for i in idx]
            sub_vars = [variables[i] for i in idx]
            rule = self.rules[rule_index]
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
        optimizers = self._updaters.optimizers
        grads = list(internals.clip_gradients(optimizers[0], grads))
        for index, optimizer in enumerate(optimizers[1:], start=1):
            if not _clips(optimizer):
                continue
            idx = record.locate(record.plan.positions_of_optimizer(index))
            if idx:
                clipped = internals.clip_gradients(optimizer, [grads[i] for i in idx])
                for i, g in zip(idx, clipped):
                    grads[i] = g
        return grads

    def check(self, plan):
        """On JAX, runs the hook and transforms on symbolic gradients, so a
        wrong return value fails when the plan is made, before any state
        exists or is handed to a traced step (where Keras has already taken
        the values). Elsewhere the step itself fails before any
        assignment."""
        variables = plan.trainable_variables()
        if not variables or (self.gradient_hook is None and not plan.transform_steps):
            return

        def process(*grads):
            return self.process(
                stage.StepRecord(
                    plan=plan, grads=list(grads), variables=variables, step=None,
                    optimizer_variables=None, positions=list(range(len(variables))),
                )
            )

        try:
            trainer_internals.check_before_trace(
                process, *[keras.KerasTensor(v.shape, v.dtype) for v in variables]
            )
        except symbolic.InvalidOutputError:
            raise
        except Exception:
            # A hook that needs concrete values (e.g. converts to NumPy in an
            # eager loop) cannot run symbolically; the real step checks it.
            pass


def _clips(optimizer):
    return bool(optimizer.clipnorm or optimizer.clipvalue or optimizer.global_clipnorm)
