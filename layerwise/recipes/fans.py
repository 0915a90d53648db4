"""Fan-in and fan-out of a weight, read from its Keras layer's layout.

The fan-in of a weight is how many of its entries are summed into one
output coordinate; the fan-out how many outputs one input coordinate
reaches. Which axes count is a property of the layer, not of the weight's
shape, so `fan_axes` reads it from the layer type and, for `EinsumDense`,
from its equation:

| layer | weight | fan-in axes | fan-out axes |
| --- | --- | --- | --- |
| `Dense` | `kernel` `(in, out)` | `(0,)` | `(1,)` |
| `EinsumDense` | `kernel` | axes contracted with the input | axes in the output only |
| `Conv1D/2D/3D` | `kernel` `(*k, in, out)` | all but the last | last |
| `Conv*Transpose` | `kernel` `(*k, out, in)` | the spatial axes and the last | second to last |
| `Depthwise`/`SeparableConv` | `depthwise_kernel` `(*k, in, mult)` | the spatial axes | last |
| `SeparableConv` | `pointwise_kernel` `(*1, in, out)` | all but the last | last |
| `Embedding` | `embeddings` `(vocab, dim)` | `(0,)` | `(1,)` |

A depthwise kernel's channel axis is neither: each channel has its own
filter, so it grows with width like a bias does. Other weights (biases,
normalization scales, LoRA factors, weights of other layers) have no known
layout: `fan_axes` returns `None`.
"""

import math

import keras

_CONV = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
_CONV_TRANSPOSE = (
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
)
_DEPTHWISE = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
_SEPARABLE = (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)


def einsum_fan_axes(equation):
    """The fan-in and fan-out axes of an `EinsumDense` kernel.

    Fan-in axes are the kernel axes contracted with the input (their letter
    is in the input and not in the output); fan-out axes are those that
    reach the output without coming from the input. Axes shared by all
    three (a batched, per-head product) belong to neither.

    Args:
        equation: An `EinsumDense` equation, `"<input>,<kernel>-><output>"`.

    Returns:
        A pair of tuples of kernel axes, `(fan_in_axes, fan_out_axes)`.

    Example:

    >>> from layerwise.recipes.fans import einsum_fan_axes
    >>> einsum_fan_axes("abc,cde->abde")  # a query projection
    ((0,), (1, 2))
    >>> einsum_fan_axes("abcd,cde->abe")  # an attention output projection
    ((0, 1), (2,))
    """
    if not isinstance(equation, str) or equation.count(",") != 1 or "->" not in equation:
        raise ValueError(
            "`equation` must be an EinsumDense equation "
            f"'<input>,<kernel>-><output>'. Received: equation={equation!r}"
        )
    inputs, output = equation.replace("...", "").split("->")
    source, kernel = inputs.split(",")
    fan_in = tuple(i for i, c in enumerate(kernel) if c in source and c not in output)
    fan_out = tuple(i for i, c in enumerate(kernel) if c in output and c not in source)
    return fan_in, fan_out


def fan_axes(layer, variable):
    """Which axes of `variable` are its fan-in and its fan-out.

    Args:
        layer: The layer that owns `variable` (directly, not through a
            sublayer).
        variable: A `keras.Variable` of `layer`.

    Returns:
        `(fan_in_axes, fan_out_axes)`, two tuples of axes, or `None` when
        the layout of this weight is not known (see the module's table).

    Example:

    >>> from layerwise.recipes.fans import fan_axes
    >>> conv = keras.layers.Conv2D(8, 3)
    >>> conv.build((None, 16, 16, 4))
    >>> fan_axes(conv, conv.kernel)
    ((0, 1, 2), (3,))
    >>> print(fan_axes(conv, conv.bias))
    None
    """
    name = variable.name
    rank = len(variable.shape)
    if isinstance(layer, keras.layers.EinsumDense) and name == "kernel":
        return einsum_fan_axes(layer.equation)
    if isinstance(layer, keras.layers.Dense) and name == "kernel":
        return (0,), (1,)
    if isinstance(layer, keras.layers.Embedding) and name == "embeddings":
        return (0,), (1,)
    if isinstance(layer, _CONV) and name == "kernel":
        return tuple(range(rank - 1)), (rank - 1,)
    if isinstance(layer, _CONV_TRANSPOSE) and name == "kernel":
        return tuple(range(rank - 2)) + (rank - 1,), (rank - 2,)
    if isinstance(layer, _DEPTHWISE + _SEPARABLE) and name in (
        "kernel",  # DepthwiseConv's name for it
        "depthwise_kernel",
    ):
        return tuple(range(rank - 2)), (rank - 1,)
    if isinstance(layer, _SEPARABLE) and name == "pointwise_kernel":
        return tuple(range(rank - 1)), (rank - 1,)
    return None


def fans(layer, variable):
    """`(fan_in, fan_out)` of `variable` as numbers, or `None`.

    Each is the product of the sizes of its axes (see `fan_axes`); a conv
    kernel's fan-in counts its receptive field, `prod(shape[:-1])`.

    Example:

    >>> from layerwise.recipes.fans import fans
    >>> dense = keras.layers.Dense(32)
    >>> dense.build((None, 8))
    >>> fans(dense, dense.kernel)
    (8, 32)
    """
    axes = fan_axes(layer, variable)
    if axes is None:
        return None
    shape = variable.shape
    return tuple(math.prod(shape[i] for i in group) for group in axes)
