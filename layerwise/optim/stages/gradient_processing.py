"""Gradient processing as a stage: once per real step, the loss scale
undone, then the hook, the rules' gradient transforms and clipping (see
`layerwise/optim/processing.py` for the order and what each sees)."""

from layerwise.optim import processing
from layerwise.optim import stage


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

    def check(self, plan):
        processing.check_symbolically(
            plan, self.rules, self.gradient_hook, self._updaters.optimizers
        )

    def run(self, record, proceed):
        if not record.grads:
            return
        optimizers = self._updaters.optimizers
        grads = processing.unscale(optimizers[0], record.grads)
        record.grads = processing.process_gradients(
            record.plan, self.rules, self.gradient_hook, optimizers,
            record.positions, grads, record.variables,
        )
        proceed(record)
