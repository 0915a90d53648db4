"""Weight transforms after the step: projections of a rule's variables.

A rule's `project=[...]` maps each of its variables' weights after the
update (after Keras' own `variable.constraint`), in order: `w <- p(w)`.
A projection is a `keras.constraints.Constraint` (Keras' own `MaxNorm`,
`UnitNorm`, `NonNeg`, `MinMaxNorm` and yours all work) or a plain callable
`weights -> weights`, wrapped with `Projection`. `max_norm` and `unit_norm`
are Keras' own constraints, so a rule projects exactly as a layer's
`kernel_constraint` would, but on any selection of variables and for
weights no layer argument reaches.

Example:

>>> import keras, layerwise as lw
>>> project = lw.unit_norm(axis=0)
>>> w = project(keras.ops.convert_to_tensor([[3.0], [4.0]]))
>>> [round(float(x), 4) for x in keras.ops.convert_to_numpy(w)[:, 0]]
[0.6, 0.8]
"""

import keras

from layerwise import _validation
from layerwise.optim import serializable

_PACKAGE = "layerwise"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Projection(serializable.WrapsFunction, keras.constraints.Constraint):
    """Wraps a plain callable `weights -> weights` as a projection.

    Args:
        fn: The callable. Register it with
            `keras.saving.register_keras_serializable` to save models that
            use it; lambdas are refused at load under `safe_mode=True`.
    """

    n_args = 1
    signature = "weights -> weights"
    arg_name = "projection"
    factory = "Projection"

    def __call__(self, w):
        return self.fn(w)


def max_norm(max_value=2.0, axis=0):
    """Rescales the weights so each slice's L2 norm over `axis` is at most
    `max_value`: `keras.constraints.MaxNorm(max_value, axis)`.

    Args:
        max_value: The largest norm (> 0).
        axis: The axis (or axes) the norms are taken over: 0 for each
            output unit of a `Dense` kernel `(inputs, units)`.

    Returns:
        A `keras.constraints.MaxNorm`.

    Example:

    >>> rule = lw.Rule("dense/kernel", project=[lw.max_norm(3.0)])
    >>> type(rule.project[0]).__name__
    'MaxNorm'
    >>> # Column norms 5 and 0.5: the first is brought down to 1.
    >>> w = lw.max_norm(1.0)(keras.ops.convert_to_tensor([[3.0, 0.3], [4.0, 0.4]]))
    >>> np.round(keras.ops.convert_to_numpy(w).astype("float64"), 4).tolist()
    [[0.6, 0.3], [0.8, 0.4]]
    """
    max_value = _validation.check_positive_finite(max_value, "max_value")
    return keras.constraints.MaxNorm(max_value, axis=_checked_axis(axis))


def unit_norm(axis=0):
    """Renormalizes the weights to unit L2 norm over `axis` (nGPT's
    projection onto the hypersphere after every step):
    `keras.constraints.UnitNorm(axis)`.

    Args:
        axis: The axis (or axes) the norms are taken over: 0 for each
            output unit of a `Dense` kernel `(inputs, units)`.

    Returns:
        A `keras.constraints.UnitNorm`.

    Example:

    >>> w = lw.unit_norm(axis=0)(keras.ops.convert_to_tensor([[3.0, 0.3], [4.0, 0.4]]))
    >>> np.round(keras.ops.convert_to_numpy(w).astype("float64"), 4).tolist()
    [[0.6, 0.6], [0.8, 0.8]]
    """
    return keras.constraints.UnitNorm(axis=_checked_axis(axis))


def _checked_axis(axis):
    axes = _validation.check_axis(axis)
    if axes is None:
        raise ValueError(f"`axis` must be an int or a tuple of ints. Received: axis={axis!r}")
    return axes[0] if len(axes) == 1 else list(axes)


def as_projection(projection):
    """Returns `projection` as a `keras.constraints.Constraint` (wrapping
    plain callables)."""
    if isinstance(projection, keras.constraints.Constraint):
        return projection
    if _validation.is_function(projection):
        return Projection(projection)
    raise TypeError(
        "A projection must be a `keras.constraints.Constraint` or a callable "
        f"`weights -> weights`. Received: projection={projection!r}"
    )


def describe(projection):
    """`ClassName(arg=value, ...)` for reprs and tables (Keras' constraints
    keep `object`'s repr)."""
    if isinstance(projection, Projection):
        return repr(projection)
    return serializable.describe(projection)
