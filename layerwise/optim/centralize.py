"""Gradient centralization.

Yong et al., "Gradient Centralization: A New Optimization Technique for Deep
Neural Networks", 2020 (https://arxiv.org/abs/2004.01461), eq. 4: the
gradient of each output unit has its mean removed,

    G <- G - mean(G, axis=(0, ..., rank - 2), keepdims=True)

for every variable of rank >= 2; scalars and vectors (biases, normalization
scales) are left alone. Keras puts a layer's output axis last (Dense
`(in, out)`, Conv1D `(k, in, out)`, Conv2D `(h, w, in, out)`), so the mean is
over all axes but the last: each output column or filter has a zero-mean
gradient.

`optax.centralize` removes the mean over all axes but the *first*
(`axis=(1, ..., rank - 1)`), the output axis of the PyTorch layouts the
paper was written for. `centralize()` is `optax.centralize` applied to the
gradient with its last axis moved to the front, then moved back.
"""

import keras
from keras import ops

from layerwise import _validation
from layerwise.optim import transforms

_PACKAGE = "layerwise"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Centralize(transforms.PerTensorTransform):
    """Removes the mean of each output unit's gradient.

    See `centralize`.
    """

    def __init__(self, axis=None):
        self.axis = _validation.check_axis(axis)

    def mean_axes(self, variable):
        """The axes `variable`'s gradient is averaged over (`()`: none)."""
        rank = len(variable.shape)
        if rank <= 1:
            return ()
        if self.axis is None:
            return tuple(range(rank - 1))
        return _validation.resolve_axes(self.axis, rank, variable)

    def transform_one(self, grad, variable):
        axes = self.mean_axes(variable)
        if not axes:
            return grad
        grad = ops.convert_to_tensor(grad)
        dtype = keras.backend.result_type(grad.dtype, "float32")
        mean = ops.mean(ops.cast(grad, dtype), axis=axes, keepdims=True)
        return grad - ops.cast(mean, grad.dtype)

    def get_config(self):
        return {"axis": None if self.axis is None else list(self.axis)}


def centralize(axis=None):
    """Gradient centralization: zero-mean gradients per output unit.

    For every variable of rank >= 2, subtracts from the gradient its mean
    over all axes but the last (Keras' output axis): over `in` for Dense
    `(in, out)`, over `(k, in)` for Conv1D, over `(h, w, in)` for Conv2D.
    Scalars and vectors are unchanged. This is `optax.centralize` mapped to
    Keras layouts (optax averages over all axes but the first).

    Args:
        axis: `None` for all axes but the last, or an int or tuple of ints:
            the axes to average over, for every variable of rank >= 2 (e.g.
            `axis=0` for EinsumDense kernels `(in, heads, dim)`, whose
            output units are `(heads, dim)` pairs).

    Returns:
        A `Centralize` transform.

    Example:

    >>> w = keras.Variable(np.zeros((2, 2)))  # Dense (in=2, out=2)
    >>> g = keras.ops.convert_to_tensor([[1.0, 2.0], [3.0, 6.0]])
    >>> [centered] = lw.centralize()([g], [w])
    >>> keras.ops.convert_to_numpy(centered).tolist()
    [[-1.0, -2.0], [1.0, 2.0]]
    """
    return Centralize(axis)
