"""Fan axes of Keras weights, against the layouts worked out by hand."""

import keras
import pytest

from layerwise.recipes.fans import einsum_fan_axes
from layerwise.recipes.fans import fan_axes
from layerwise.recipes.fans import fans


# Only shapes matter: zeros, as JAX compiles a random initializer once per
# shape.
Z = {"kernel_initializer": "zeros"}
ZD = {"depthwise_initializer": "zeros"}


def _built(layer, input_shape):
    layer.build(input_shape)
    return layer


def test_einsum_fan_axes():
    assert {
        equation: einsum_fan_axes(equation)
        for equation in ["ab,bc->ac", "...b,bc->...c", "abc,cde->abde",
                         "abcd,cde->abe", "abc,bcd->abd"]
    } == {
        "ab,bc->ac": ((0,), (1,)),  # a Dense
        "...b,bc->...c": ((0,), (1,)),
        "abc,cde->abde": ((0,), (1, 2)),  # attention query/key/value
        "abcd,cde->abe": ((0, 1), (2,)),  # attention output
        "abc,bcd->abd": ((1,), (2,)),  # `b` batched: neither fan
    }


def test_einsum_fan_axes_rejects_other_equations():
    for equation in ["ab->ab", "ab,bc", 3]:
        with pytest.raises(ValueError, match="`equation` must be an EinsumDense equation"):
            einsum_fan_axes(equation)


@pytest.mark.parametrize(
    "make, input_shape, attribute, expected_axes, expected_fans",
    [
        (lambda: keras.layers.Dense(32, **Z), (None, 8), "kernel", ((0,), (1,)), (8, 32)),
        (lambda: keras.layers.EinsumDense("abc,cde->abde", (None, 2, 16), **Z),
         (None, 5, 8), "kernel", ((0,), (1, 2)), (8, 32)),
        (lambda: keras.layers.Conv1D(8, 3, **Z), (None, 10, 4), "kernel",
         ((0, 1), (2,)), (12, 8)),
        (lambda: keras.layers.Conv2D(8, 3, **Z), (None, 6, 6, 4), "kernel",
         ((0, 1, 2), (3,)), (36, 8)),
        (lambda: keras.layers.Conv3D(8, 3, **Z), (None, 6, 6, 6, 4), "kernel",
         ((0, 1, 2, 3), (4,)), (108, 8)),
        # Transposed kernels are (*k, out, in).
        (lambda: keras.layers.Conv2DTranspose(8, 3, **Z), (None, 6, 6, 4), "kernel",
         ((0, 1, 3), (2,)), (36, 8)),
        (lambda: keras.layers.DepthwiseConv2D(3, depth_multiplier=2, **ZD),
         (None, 6, 6, 4), "kernel", ((0, 1), (3,)), (9, 2)),
        (lambda: keras.layers.SeparableConv2D(
            8, 3, depth_multiplier=2, pointwise_initializer="zeros", **ZD),
         (None, 6, 6, 4), "depthwise_kernel", ((0, 1), (3,)), (9, 2)),
        (lambda: keras.layers.SeparableConv2D(
            8, 3, depth_multiplier=2, pointwise_initializer="zeros", **ZD),
         (None, 6, 6, 4), "pointwise_kernel", ((0, 1, 2), (3,)), (8, 8)),
        (lambda: keras.layers.Embedding(100, 16, embeddings_initializer="zeros"),
         (None, 3), "embeddings", ((0,), (1,)), (100, 16)),
    ],
    ids=["dense", "einsum_dense", "conv1d", "conv2d", "conv3d", "conv2d_transpose",
         "depthwise", "separable_depthwise", "separable_pointwise", "embedding"],
)
def test_known_layouts(make, input_shape, attribute, expected_axes, expected_fans):
    layer = _built(make(), input_shape)
    variable = getattr(layer, attribute)
    assert fan_axes(layer, variable) == expected_axes
    assert fans(layer, variable) == expected_fans


@pytest.mark.parametrize(
    "make, input_shape, attribute",
    [
        (lambda: keras.layers.Dense(4, **Z), (None, 3), "bias"),
        (lambda: keras.layers.LayerNormalization(), (None, 3), "gamma"),
    ],
    ids=["bias", "norm"],
)
def test_other_weights_have_no_layout(make, input_shape, attribute):
    layer = _built(make(), input_shape)
    assert fan_axes(layer, getattr(layer, attribute)) is None
    assert fans(layer, getattr(layer, attribute)) is None


def test_lora_factors_have_no_layout():
    # Their shapes (in, rank) and (rank, out) have one fan each that grows:
    # vector-like for μP, whatever the layout.
    layer = _built(keras.layers.Dense(8, **Z), (None, 4))
    layer.enable_lora(2, a_initializer="zeros")
    assert fan_axes(layer, layer.lora_kernel_a) is None
    assert fan_axes(layer, layer.lora_kernel_b) is None
