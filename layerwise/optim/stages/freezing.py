"""Freezing: which variables the step leaves alone.

Frozen variables get no gradient processing, no update and no slots. With
`skip_frozen_gradients` they are also marked `trainable=False` while frozen,
so Keras' trainer computes no gradient for them (freezing by a rule then
costs what `layer.trainable = False` costs), and marked back when they
unfreeze.
"""

import warnings

from keras import ops

from layerwise._internals import optimizers as internals
from layerwise.optim import plan as plan_lib
from layerwise.optim import stage


class Freezing(stage.Stage):
    """Applies a plan's freezing to the variables and the step's inputs.

    In: the step goes on with the variables it updates only (see
    `trainable_subset`).

    Args:
        mark_untrainable: `skip_frozen_gradients`.
        key: Callable `variable -> hashable`, how the wrapper identifies
            a variable.
    """

    def __init__(self, mark_untrainable, key):
        self.mark_untrainable = mark_untrainable
        self._key = key
        self._marked = set()
        self._position = {}
        # Frozen variables by key: the rules freezing them, for the warning
        # when something marks them trainable again behind the plan's back.
        self._frozen_by = {}
        self._warned = set()

    name = "freezing"

    def run(self, record, proceed):
        positions, grads, variables, overwrites = self.trainable_subset(
            record.grads, record.variables
        )
        record.positions, record.grads, record.variables = positions, grads, variables
        record.overwrites = overwrites
        proceed(record)

    def use_plan(self, plan):
        """Marks the plan's frozen variables (and unmarks the unfrozen)."""
        if self.mark_untrainable:
            for p in plan.variables:
                key = self._key(p.variable)
                if p.frozen and p.variable.trainable:
                    p.variable.trainable = False
                    self._marked.add(key)
                elif not p.frozen and key in self._marked:
                    p.variable.trainable = True
                    self._marked.discard(key)
        self._position = {self._key(p.variable): i for i, p in enumerate(plan.trainable)}
        self._frozen_by = {self._key(p.variable): p.rules for p in plan.variables if p.frozen}

    def newly_trainable(self, plan):
        """The variables of `plan` that the plan applied last froze."""
        return [p.variable for p in plan.trainable if self._key(p.variable) not in self._position]

    def trainable_subset(self, grads, variables):
        """Drops frozen variables and missing gradients, and sets apart the
        variables Keras overwrites with their gradient (float8 scales,
        `variable.overwrite_with_gradient`).

        Returns:
            Positions in `plan.trainable`, gradients and variables to
            update, and `(gradient, variable)` pairs to overwrite.

        Raises:
            ValueError: As Keras, when no variable has a gradient.
        """
        if all(g is None for g in grads):
            raise ValueError("No gradients provided for any variable.")
        kept, overwrites, missing, retrained = [], [], [], []
        for grad, variable in zip(grads, variables):
            key = self._key(variable)
            position = self._position.get(key)
            if position is None:
                if grad is not None and key in self._marked and variable.trainable:
                    retrained.append(variable)
                continue
            if grad is None:
                missing.append(plan_lib.path_of(variable))
                continue
            if not ops.is_tensor(grad):
                grad = ops.convert_to_tensor(grad, dtype=variable.dtype)
            # `getattr`: raw `tf.Variable`s, which Keras' TensorFlow
            # optimizers accept too, have no such flag.
            if getattr(variable, "overwrite_with_gradient", False):
                overwrites.append((grad, variable))
            else:
                kept.append((position, grad, variable))
        if missing:
            internals.warn_missing_gradients(missing)
        if retrained:
            self._warn_retrained(retrained)
        if not kept:
            return [], [], [], overwrites
        positions, grads, variables = (list(x) for x in zip(*kept))
        return positions, grads, variables, overwrites

    def _warn_retrained(self, variables):
        """Once per variable: marked trainable again while a rule freezes it
        (`layer.trainable = True`), it gets a gradient and no update."""
        fresh = [v for v in variables if self._key(v) not in self._warned]
        if not fresh:
            return
        self._warned.update(self._key(v) for v in fresh)
        rules = sorted({r for v in fresh for r in self._frozen_by.get(self._key(v), ())})
        warnings.warn(
            f"Variables {[plan_lib.path_of(v) for v in fresh]} are marked "
            "`trainable=True` again (e.g. by `layer.trainable = True`) but the "
            f"rules {rules} freeze them: they stay unchanged, the rules win. "
            "To train them, unfreeze the rule: `optimizer.set_frozen(name, "
            "False)` (or `layerwise.callbacks.GradualUnfreezing`), which also "
            "marks them trainable.",
            UserWarning,
            stacklevel=2,
        )
