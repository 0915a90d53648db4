"""`FlattenedMuon`: Keras' `Muon` that also orthogonalizes convolution kernels.

Keras' `Muon` orthogonalizes rank-2 variables only and sends every other
one to its AdamW step. timm's `Muon` and the flattening proposed for
PyTorch's `torch.optim.Muon` orthogonalize a convolution kernel as the
matrix of its fan-in by its outputs instead: in Keras' layout a kernel of
shape `(*window, in, out)` is reshaped to `(prod(shape[:-1]), shape[-1])`,
goes through the same Newton-Schulz iteration and `rms_rate` scaling as a
`Dense` kernel of that shape, and is reshaped back.
"""

import math
import re

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="layerwise")
class FlattenedMuon(keras.optimizers.Muon):
    """Keras' `Muon`, with every variable of rank > 2 orthogonalized flattened.

    A variable of rank > 2 that `Muon` would send to its AdamW step takes
    the Muon step instead: its momentum keeps the variable's shape, and the
    Newton-Schulz iteration and the `rms_rate` scaling
    (`sqrt(max(rows, cols)) * rms_rate`) run on the matrix
    `(prod(shape[:-1]), shape[-1])`, which is reshaped back to the
    variable's shape for the update. Rank-2 variables are updated exactly
    as by `keras.optimizers.Muon`; 0-D and 1-D variables, and those excluded
    by `exclude_embeddings` or `exclude_layers`, take its AdamW step.
    Convolution kernels then get Muon's weight decay (`weight_decay`), not
    `adam_weight_decay`.

    Flattening all axes but the last suits kernels whose last axis is the
    output: `Conv1D`/`Conv2D`/`Conv3D` kernels (`(*window, in, out)`).
    Route only those and matrices to it, as
    `layerwise.muon_rules(model, conv="flatten")` does; an `EinsumDense`
    kernel such as `(hidden, heads, head_dim)` is not a matrix of fan-in by
    outputs.

    Prefer it over `keras.optimizers.Muon` for convolutional networks whose
    hidden convolutions hold most of the weights (ResNets, ConvNeXt, U-Nets),
    as timm does: Keras' `Muon` would update all of them with AdamW. Keep the
    stem (few input channels: a matrix too thin for Newton-Schulz) and the
    head on AdamW; `muon_rules` does that by timm's shape test.

    Takes the arguments of `keras.optimizers.Muon`.

    Example:

    >>> opt = lw.FlattenedMuon(learning_rate=0.02)
    >>> kernel = keras.Variable(np.ones((3, 3, 8, 16)), dtype="float32")
    >>> opt.build([kernel])
    >>> opt.adam_velocities[0] is None  # no AdamW slot: the Muon step
    True
    >>> grad = keras.ops.ones((3, 3, 8, 16))
    >>> _ = opt.apply_gradients([(grad, kernel)])
    >>> tuple(kernel.shape)
    (3, 3, 8, 16)
    """

    def _should_use_adamw(self, variable):
        if len(variable.shape) <= 2:
            return super()._should_use_adamw(variable)
        if self.exclude_embeddings and "embedding" in variable.path.lower():
            return True
        return any(re.search(keyword, variable.path) for keyword in self.exclude_layers)

    def _muon_update_step(self, gradient, variable, lr, m):
        shape = tuple(variable.shape)
        if len(shape) <= 2:
            return super()._muon_update_step(gradient, variable, lr, m)
        self.assign_add(m, ops.add(gradient, m * (self.momentum - 1)))
        if self.nesterov:
            g = ops.add(gradient, self.momentum * m)
        else:
            g = m
        matrix = ops.reshape(g, (math.prod(shape[:-1]), shape[-1]))
        update = self.lr_adjust(lr * self.zeropower_via_newtonschulz5(matrix, self.ns_steps))
        self.assign_sub(variable, ops.reshape(update, shape))
