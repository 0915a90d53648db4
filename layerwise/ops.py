"""Gradient control inside the graph: scale, stop or reverse a gradient.

`scale_gradient(x, factor)` is the identity in the forward pass and multiplies
the gradient by `factor` in the backward pass. `factor` may be a Python float,
a tensor or a `keras.Variable` (read on every call, so it can change during
training without retracing). Both are built on `keras.ops.custom_gradient`,
which gives an exact identity forward on every backend and is jit-safe.
"""

import keras
from keras import ops

__all__ = ["reverse_gradient", "scale_gradient"]


@ops.custom_gradient
def _scaled_identity(x, factor):
    def grad(*args, upstream=None):
        if upstream is None:
            (upstream,) = args
        return (
            upstream * ops.cast(factor, upstream.dtype),
            ops.zeros_like(factor),
        )

    return ops.copy(x), grad


def scale_gradient(x, factor):
    """Identity forward; multiplies the gradient flowing back by `factor`.

    `factor=0` stops the gradient, `factor=-1` reverses it, `0 < factor < 1`
    makes everything before `x` learn more slowly (under SGD; adaptive
    optimizers normalize a constant factor away).

    Args:
        x: a float tensor.
        factor: a float, a scalar tensor or a `keras.Variable`.

    Returns:
        A tensor equal to `x`.

    Example:

    >>> x = keras.ops.ones((2, 3))
    >>> y = scale_gradient(x, 0.1)  # y == x; dy/dx == 0.1
    """
    x = ops.convert_to_tensor(x)
    if not keras.backend.is_float_dtype(x.dtype):
        raise ValueError(
            f"`x` must be a float tensor. Received: x.dtype={x.dtype}"
        )
    factor = ops.convert_to_tensor(factor, dtype=x.dtype)
    if len(factor.shape) != 0:
        raise ValueError(
            f"`factor` must be a scalar. Received: factor.shape={factor.shape}"
        )
    return _scaled_identity(x, factor)


def reverse_gradient(x, factor=1.0):
    """Identity forward; multiplies the gradient flowing back by `-factor`.

    The gradient reversal layer of domain-adversarial training (Ganin &
    Lempitsky, 2015), and the way to train a GAN's generator and
    discriminator with one loss (see `examples/gan_single_loss.py`).

    Args:
        x: a float tensor.
        factor: a float, a scalar tensor or a `keras.Variable`.

    Returns:
        A tensor equal to `x`.

    Example:

    >>> y = reverse_gradient(keras.ops.ones((2, 3)))  # dy/dx == -1
    """
    return scale_gradient(x, -ops.convert_to_tensor(factor))
