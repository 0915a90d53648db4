"""The rules' constant `lr_scale`s, in one variable of the optimizer.

A constant multiplier lives in optimizer state, not in the traced step, so
`set_lr_scale` changes it without retracing. All of an optimizer's
constant multipliers share one float32 vector variable, `lr_scales`, one
entry per rule with a constant `lr_scale` in rule order: creating one
backend variable per rule made building with thousands of rules slow
(~1 ms per variable on TensorFlow). Each bound rule reads its entry
through a `Multiplier`.
"""

import numpy as np
from keras import ops


class Multipliers:
    """The vector of an optimizer's constant multipliers.

    Args:
        state: The optimizer's `StateMaker`.
        values: The initial multipliers, in rule order (may be empty: then
            no variable is created).
    """

    def __init__(self, state, values):
        self.variable = state.vector("lr_scales", values) if values else None
        self.count = len(values)

    def __getitem__(self, index):
        return Multiplier(self, index)

    @property
    def variables(self):
        return [] if self.variable is None else [self.variable]


class Multiplier:
    """One rule's entry of `Multipliers`."""

    def __init__(self, multipliers, index):
        self._multipliers = multipliers
        self.index = index

    @property
    def variable(self):
        """The vector variable this is an entry of."""
        return self._multipliers.variable

    def tensor(self):
        """The multiplier as a float32 scalar tensor (in a step: the value
        the stateless scope holds)."""
        return self._multipliers.variable[self.index]

    def read(self):
        """The multiplier as a NumPy float32."""
        return np.float32(ops.convert_to_numpy(self._multipliers.variable)[self.index])

    def assign(self, value):
        """Sets the entry (a number, or a 0-d array such as a saved value)."""
        variable = self._multipliers.variable
        update = np.reshape(np.asarray(value, "float32"), (1,))
        variable.assign(ops.scatter_update(variable.value, [[self.index]], update))
