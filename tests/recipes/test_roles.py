"""Roles of a model's variables: owners, embeddings, normalizations (by
class and by scale invariance), biases, tied weights, output layers."""

import keras
import numpy as np
import pytest

from layerwise.recipes import roles


def _built(layer, shape):
    layer.build(shape)
    return layer


class _RMSNorm(keras.layers.Layer):
    def build(self, shape):
        self.scale = self.add_weight(shape=shape[-1:], initializer="ones", name="scale")

    def call(self, x, training=None):
        return x * keras.ops.rsqrt(keras.ops.mean(x * x, axis=-1, keepdims=True) + 1e-6) * self.scale


class _Affine(keras.layers.Layer):
    """`x * w + b` per feature: two vectors, but no normalization."""

    def build(self, shape):
        self.w = self.add_weight(shape=shape[-1:], initializer="ones", name="w")
        self.b = self.add_weight(shape=shape[-1:], initializer="zeros", name="b")

    def call(self, x):
        return x * self.w + self.b


class _Zeros(keras.layers.Layer):
    """Scale invariant but ignores its input: not a normalization."""

    def build(self, shape):
        self.w = self.add_weight(shape=shape[-1:], initializer="zeros", name="w")

    def call(self, x):
        return keras.ops.zeros_like(x) * self.w


class _NeedsMask(keras.layers.Layer):
    def build(self, shape):
        self.w = self.add_weight(shape=shape[-1:], initializer="ones", name="w")

    def call(self, x, mask):
        return x * self.w * mask


def test_is_normalization_by_class_or_by_scale_invariance():
    cases = {
        "layer_norm": (_built(keras.layers.LayerNormalization(), (None, 8)), True),
        "rms_norm": (_built(keras.layers.RMSNormalization(), (None, 8)), True),
        "batch_norm": (_built(keras.layers.BatchNormalization(), (None, 8)), True),
        "group_norm": (_built(keras.layers.GroupNormalization(groups=2), (None, 8)), True),
        "custom_rms_norm": (_built(_RMSNorm(), (None, 8)), True),
        "affine": (_built(_Affine(), (None, 8)), False),
        "constant": (_built(_Zeros(), (None, 8)), False),
        "needs_mask": (_built(_NeedsMask(), (None, 8)), False),
        "prelu": (_built(keras.layers.PReLU(), (None, 8)), False),
        "dense": (_built(keras.layers.Dense(8), (None, 8)), False),
        "embedding": (_built(keras.layers.Embedding(10, 8), (None, 3)), False),
        "unbuilt": (_RMSNorm(), False),  # no variables to judge by
    }
    found = {name: roles.is_normalization(layer) for name, (layer, _) in cases.items()}
    assert found == {name: expected for name, (_, expected) in cases.items()}


def test_is_embedding_by_class_and_class_name():
    class PositionEmbedding(keras.layers.Layer):  # keras-hub's is a plain Layer
        pass

    assert roles.is_embedding(keras.layers.Embedding(4, 2))
    assert roles.is_embedding(keras.layers.ReversibleEmbedding(4, 2))
    assert roles.is_embedding(PositionEmbedding())
    assert not roles.is_embedding(keras.layers.Dense(2, name="embedding"))


def test_roles_of_a_functional_model():
    inputs = keras.Input((3,), dtype="int32")
    x = keras.layers.Embedding(10, 8, name="embed")(inputs)
    x = keras.layers.EinsumDense("abc,cde->abde", output_shape=(3, 2, 4), bias_axes="de",
                                 name="proj")(x)
    x = _RMSNorm(name="rms")(keras.layers.Reshape((3, 8))(x))
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(x))
    by_path = {r.variable.path: r for r in roles.variable_roles(model)}
    assert list(by_path) == [v.path for v in model.trainable_variables]
    assert [p for p, r in by_path.items() if r.embedding] == ["embed/embeddings"]
    assert [p for p, r in by_path.items() if r.normalization] == ["rms/scale"]
    assert [p for p, r in by_path.items() if r.bias] == ["proj/bias", "head/bias"]
    assert by_path["proj/bias"].variable.shape == (2, 4)  # a bias of any rank
    assert not any(r.tied for r in by_path.values())
    assert [layer.name for layer in by_path["head/kernel"].owners] == ["head"]


class _Decoder(keras.layers.Layer):
    """Projects back through the transpose of another layer's kernel."""

    def __init__(self, source, **kwargs):
        super().__init__(**kwargs)
        self.source = source

    def call(self, x):
        return keras.ops.matmul(x, keras.ops.transpose(self.source.kernel))


class _Holder(keras.layers.Layer):
    """Holds another layer's variable directly (not the layer)."""

    def __init__(self, variable, **kwargs):
        super().__init__(**kwargs)
        self.shared = variable

    def call(self, x):
        return x * self.shared


def test_tied_weights_through_a_shared_layer_or_a_shared_variable():
    inputs = keras.Input((4,))
    encode = keras.layers.Dense(6, name="encode")
    x = _Decoder(encode, name="decode")(encode(inputs))
    gate = keras.layers.Dense(4, name="gate")
    y = gate(inputs)
    holder = _Holder(gate.bias, name="holder")
    model = keras.Model(inputs, [x, holder(y)])
    tied = {r.variable.path: r.tied for r in roles.variable_roles(model)}
    assert tied == {"encode/kernel": True, "encode/bias": True,
                    "gate/kernel": False, "gate/bias": True}


def test_a_layer_called_twice_is_not_tied():
    inputs = keras.Input((4,))
    shared = keras.layers.Dense(4, name="shared")
    model = keras.Model(inputs, shared(shared(inputs)))
    assert not any(r.tied for r in roles.variable_roles(model))


def test_output_layers_walk_back_through_weightless_operations():
    inputs = keras.Input((4,))
    a = keras.layers.Dense(3, name="a")(inputs)
    b = keras.layers.Dense(3, name="b")(keras.layers.Dense(3, name="hidden")(inputs))
    x = keras.layers.Activation("relu")(keras.layers.Add()([a, b]))
    model = keras.Model(inputs, [x, keras.layers.Dense(1, name="aux")(x)])
    assert [layer.name for layer in roles.output_layers(model)] == ["a", "b", "aux"]


def test_output_layers_of_sequential_and_subclassed_models():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="d"),
                              keras.layers.Dense(2, name="head"), keras.layers.Softmax()])
    assert [layer.name for layer in roles.output_layers(model)] == ["head"]

    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.head = keras.layers.Dense(2)

        def call(self, x):
            return self.head(x)

    sub = Sub()
    sub(np.zeros((1, 4), "float32"))
    assert roles.output_layers(sub) is None
