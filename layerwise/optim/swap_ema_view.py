"""The wrapper's averages as Keras' `SwapEMAWeights` callback reads them.

Keras' callback swaps `optimizer._trainable_variables` with
`optimizer._model_variables_moving_average`, where `optimizer` is the
model's optimizer, or its `inner_optimizer` when it has one (Keras means a
`LossScaleOptimizer`). For a model compiled with a `LayerwiseOptimizer`
that is the inner optimizer; under a `LossScaleOptimizer`, the wrapper
itself. Both get a `SwapView`: the averages of the variables that optimizer
was built on, in that order, read when the callback reads them (so the
view follows `set_frozen`). If the wrapper averages variables the callback
cannot see (variables of a rule's optimizer, or unfrozen at runtime), or
that optimizer holds variables without an average (frozen ones), the view
raises instead of swapping only some weights: `layerwise.ema_weights` and
`layerwise.callbacks.EvaluateWithEMA` swap every average.
"""

import collections.abc
import weakref

from layerwise._internals import callbacks as callback_internals
from layerwise._internals import optimizers as internals
from layerwise.optim import plan as plan_lib


class SwapView(collections.abc.Sequence):
    """The averages of `holder`'s built variables, in their order.

    Args:
        wrapper: The `LayerwiseOptimizer` keeping the averages.
        holder: The optimizer whose variables Keras' callback swaps (the
            inner optimizer, or the wrapper).
    """

    def __init__(self, wrapper, holder):
        # Weak: the wrapper (or its inner optimizer) holds this view.
        self._wrapper = weakref.ref(wrapper)
        self._holder = weakref.ref(holder)

    def _averages(self):
        wrapper, holder = self._wrapper(), self._holder()
        average_of = {id(v): a for v, a in wrapper.ema_pairs()}
        variables = internals.built_variables(holder)
        seen = {id(v) for v in variables}
        outside = [plan_lib.path_of(v) for v, _ in wrapper.ema_pairs() if id(v) not in seen]
        without = [plan_lib.path_of(v) for v in variables if id(v) not in average_of]
        if outside or without:
            problem = (
                f"the LayerwiseOptimizer also averages variables outside it "
                f"(updated by a rule's optimizer, or unfrozen at runtime): {outside}"
                if outside
                else f"it holds variables without an average (frozen): {without}"
            )
            raise ValueError(
                "`keras.callbacks.SwapEMAWeights` swaps the variables of one "
                f"optimizer, here {holder.name!r}, but {problem}. Swapping "
                "only some weights would mix averaged and raw ones. Use "
                "`layerwise.callbacks.EvaluateWithEMA()` to validate with "
                "the averages, or `with layerwise.ema_weights(model): ...`; "
                "both swap every average."
            )
        return [average_of[id(v)] for v in variables]

    def __len__(self):
        return len(self._averages())

    def __getitem__(self, index):
        return self._averages()[index]

    def __iter__(self):
        return iter(self._averages())


def expose(wrapper):
    """Hands the wrapper's averages to Keras' `SwapEMAWeights`, on both
    optimizers the callback may look at (see the module docstring)."""
    for holder in (wrapper.inner_optimizer, wrapper):
        callback_internals.expose_averages(holder, SwapView(wrapper, holder))
