"""Small models and references shared by the tests."""

import keras
import numpy as np


def mlp(seed=0, name="mlp"):
    """Three Dense layers named l0, l1, l2 (l1 and l2 with biases)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6,))
    x = keras.layers.Dense(5, activation="tanh", name="l0")(inputs)
    x = keras.layers.Dense(4, activation="tanh", name="l1")(x)
    outputs = keras.layers.Dense(2, name="l2")(x)
    return keras.Model(inputs, outputs, name=name)


def data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype("float32")
    y = rng.normal(size=(n, 2)).astype("float32")
    return x, y


def weights(model):
    """All of the model's weights (frozen ones included: `LayerwiseOptimizer`
    marks variables frozen by a rule `trainable=False`)."""
    return [np.array(keras.ops.convert_to_numpy(v)) for v in model.weights]


def assert_weights_close(actual, expected, rtol=1e-5, atol=1e-6):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a, e, rtol=rtol, atol=atol)


def apply_transform(transform, grads, variables):
    """`transform(grads, variables)` on numpy gradients, as numpy arrays.

    On JAX it runs traced, as in a train step: one compilation instead of
    one per operation and shape.
    """

    def run(grads):
        return transform(grads, variables)

    if keras.backend.backend() == "jax":
        import jax

        run = jax.jit(run)
    out = run([keras.ops.convert_to_tensor(g) for g in grads])
    return [np.array(keras.ops.convert_to_numpy(g)) for g in out]


def built(layer, input_shape):
    """`layer` built with zero kernels (tests assign their own values;
    random initializers cost a compilation per shape on JAX)."""
    layer.kernel_initializer = keras.initializers.Zeros()
    layer.build(input_shape)
    return layer
