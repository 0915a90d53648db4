"""Adaptive gradient clipping (AGC, NFNets), unit-wise.

Brock et al., "High-Performance Large-Scale Image Recognition Without
Normalization", 2021 (https://arxiv.org/abs/2102.06171), section 4.1. For
each *unit* `i` of a variable `W` (a slice along the unit axes, e.g. one
output column of a Dense kernel) with gradient `G`:

    max_norm_i = clipping * max(||W_i||, eps)
    G_i <- G_i                                   if ||G_i|| < max_norm_i
    G_i <- G_i * max_norm_i / max(||G_i||, 1e-6)  otherwise

with Frobenius norms over the unit's elements. This is
`optax.adaptive_grad_clip(clipping, eps, axis)` exactly (the `1e-6` is
optax's guard against dividing by zero, which only a zero gradient could
reach, and a zero gradient is never clipped).

Which axes a unit spans (the axes the norm reduces over) with `axis=None`,
by the variable's shape; it is optax's (and the NFNets code's) convention,
which is "every axis but the output axis" for Keras' Dense, EinsumDense
projections into heads, Conv2D and Conv3D kernels:

| variable                                   | reduced axes      |
|--------------------------------------------|-------------------|
| at most one dimension larger than 1        | all (one unit)    |
| (scalars, biases, `(1, units)` kernels)    |                   |
| rank 2: Dense `(in, out)`                  | `(0,)`            |
| rank 3: EinsumDense `(in, heads, dim)`     | `(0,)`            |
| rank 4: Conv2D `(h, w, in, out)`           | `(0, 1, 2)`       |
| rank 5: Conv3D `(d, h, w, in, out)`        | `(0, 1, 2, 3)`    |
| rank >= 6                                  | all but the last  |

Rank 3 is ambiguous from the shape alone: Conv1D kernels `(k, in, out)` and
attention output projections `(heads, dim, out)` have their output on the
last axis and want `axis=(0, 1)`; give those variables a rule of their own.
An explicit `axis` applies to every variable of rank >= 2 the rule selects;
scalars and vectors are always one unit (the only valid choice there).
"""

import keras
from keras import ops

from layerwise import _validation
from layerwise.optim import transforms

_PACKAGE = "layerwise"

# optax's `unitwise_clip(div_eps=1e-6)`.
_DIV_EPS = 1e-6


def default_unit_axes(shape):
    """The axes `adaptive_clip(axis=None)` reduces for a variable `shape`
    (`None`: all of them)."""
    if sum(d != 1 for d in shape) <= 1:
        return None
    rank = len(shape)
    if rank in (2, 3):
        return (0,)
    return tuple(range(rank - 1))


def _unitwise_norm(x, axes):
    return ops.sqrt(ops.sum(ops.square(x), axis=axes, keepdims=True))


@keras.saving.register_keras_serializable(package=_PACKAGE)
class AdaptiveClip(transforms.PerTensorTransform):
    """Clips each unit's gradient to `clipping` times the unit's weight norm.

    See `adaptive_clip`.
    """

    def __init__(self, clipping=0.01, eps=1e-3, axis=None):
        self.clipping = _validation.check_positive_finite(clipping, "clipping")
        self.eps = _validation.check_nonnegative_finite(eps, "eps")
        self.axis = _validation.check_axis(axis)

    def unit_axes(self, variable):
        """The axes the norms of `variable` reduce over (`None`: all)."""
        shape = tuple(variable.shape)
        if len(shape) <= 1:
            return None
        if self.axis is None:
            return default_unit_axes(shape)
        return _validation.resolve_axes(self.axis, len(shape), variable)

    def transform_one(self, grad, variable):
        axes = self.unit_axes(variable)
        grad = ops.convert_to_tensor(grad)
        # Norms in at least float32: a float16 sum of squares overflows.
        dtype = keras.backend.result_type(grad.dtype, "float32")
        g = ops.cast(grad, dtype)
        w = ops.cast(variable.value, dtype)
        g_norm = _unitwise_norm(g, axes)
        max_norm = self.clipping * ops.maximum(_unitwise_norm(w, axes), self.eps)
        clipped = g * (max_norm / ops.maximum(g_norm, _DIV_EPS))
        return ops.cast(ops.where(g_norm < max_norm, g, clipped), grad.dtype)

    def get_config(self):
        return {
            "clipping": self.clipping,
            "eps": self.eps,
            "axis": None if self.axis is None else list(self.axis),
        }


def adaptive_clip(clipping=0.01, eps=1e-3, axis=None):
    """Adaptive gradient clipping (NFNets), unit-wise over the output axis.

    Each unit's gradient is rescaled to norm `clipping * max(||w||, eps)`
    where it is larger, `w` being the unit's current weights (before the
    update). Equals `optax.adaptive_grad_clip(clipping, eps, axis)`. The
    units of a variable, with `axis=None`: one output column of Dense
    kernels `(in, out)` and EinsumDense kernels `(in, heads, dim)`, one
    output channel of Conv2D / Conv3D kernels; scalars and biases are one
    unit each. For Conv1D kernels `(k, in, out)` and attention output
    projections `(heads, dim, out)`, pass `axis=(0, 1)` in a rule that
    selects them (`layerwise.optim.adaptive_clip` lists every shape).

    The paper clips every layer but the classifier head.

    Args:
        clipping: The largest ratio of gradient norm to weight norm, a
            finite number > 0 (the paper uses 0.01 to 0.16; smaller for
            larger batches).
        eps: Floor on the weight norm, a finite number >= 0, so
            zero-initialized weights (biases) can move.
        axis: `None` for the convention above, or an int or tuple of ints:
            the axes each norm reduces over, for every variable of rank
            >= 2 (negative axes count from the end).

    Returns:
        An `AdaptiveClip` transform.

    Example:

    >>> w = keras.Variable([[3.0, 0.0], [4.0, 1.0]])  # Dense (in=2, out=2)
    >>> g = keras.ops.convert_to_tensor([[1.0, 0.0], [0.0, 0.05]])
    >>> [clipped] = lw.adaptive_clip(clipping=0.1)([g], [w])
    >>> [[round(float(x), 4) for x in row]
    ...  for row in keras.ops.convert_to_numpy(clipped)]
    [[0.5, 0.0], [0.0, 0.05]]

    Column 0 (weight norm 5) is clipped to norm 0.5; column 1 (weight norm
    1, gradient norm 0.05 < 0.1) is kept.
    """
    return AdaptiveClip(clipping, eps, axis)
