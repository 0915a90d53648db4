"""Projections in the step: after the update and Keras' constraints,
exactly as a layer's constraint, and composed with the other stages."""

import keras
import numpy as np
import pytest

import layerwise as lw
from tests import helpers


def _fit(model, optimizer, jit_compile, epochs=2):
    x, y = helpers.data(32)
    model.compile(optimizer, "mse", jit_compile=jit_compile)
    model.fit(x, y, batch_size=16, epochs=epochs, shuffle=False, verbose=0)
    return helpers.weights(model)


def _constrained_mlp(constraint):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    x = keras.layers.Dense(5, activation="tanh", name="l0", kernel_constraint=constraint)(inputs)
    x = keras.layers.Dense(4, activation="tanh", name="l1", kernel_constraint=constraint)(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="l2")(x))


def test_max_norm_rule_equals_keras_kernel_constraint(jit_compile):
    by_rule = _fit(
        helpers.mlp(),
        lw.LayerwiseOptimizer(
            keras.optimizers.Adam(0.05), [lw.Rule("l[01]/kernel", project=[lw.max_norm(0.8)])]
        ),
        jit_compile,
    )
    by_layer = _fit(
        _constrained_mlp(keras.constraints.MaxNorm(0.8)), keras.optimizers.Adam(0.05), jit_compile
    )
    helpers.assert_weights_close(by_rule, by_layer, rtol=1e-6)


def test_unit_norm_keeps_rows_on_the_sphere():
    variable = keras.Variable(np.array([[3.0, 4.0], [1.0, 0.0], [0.5, 0.5]], "float32"), name="v")
    opt = lw.LayerwiseOptimizer(keras.optimizers.Adam(0.05), [lw.Rule("v", project=[lw.unit_norm(1)])])
    opt.build([variable])
    for _ in range(2):
        opt.apply([keras.ops.ones((3, 2))], [variable])
    np.testing.assert_allclose(np.linalg.norm(keras.ops.convert_to_numpy(variable), axis=1), 1.0, rtol=1e-5)


def test_projection_runs_after_the_keras_constraint():
    layer = keras.layers.Dense(2, use_bias=False, kernel_constraint=keras.constraints.NonNeg())
    layer.build((None, 1))
    variable = layer.kernel
    variable.assign(np.array([[0.5, -0.5]], "float32"))
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.SGD(1.0), [lw.Rule(".*", project=[lambda w: w - 1.0])]
    )
    opt.build([variable])
    opt.apply([keras.ops.convert_to_tensor(np.array([[0.1, 0.1]], "float32"))], [variable])
    # NonNeg first (max(w - 0.1, 0)), then the projection.
    np.testing.assert_allclose(keras.ops.convert_to_numpy(variable), [[-0.6, -1.0]], rtol=1e-6)


def test_projections_chain_in_rule_order():
    variable = keras.Variable(np.array([3.0, 4.0], "float32"), name="v")
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.SGD(0.0),
        [lw.Rule(".*", project=[lw.unit_norm()]), lw.Rule("v", project=[lambda w: w * 2.0])],
    )
    opt.build([variable])
    opt.apply([keras.ops.zeros((2,))], [variable])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(variable), [1.2, 1.6], rtol=1e-5)


def test_skipped_step_and_micro_steps_project_nothing():
    variable = keras.Variable(np.array([3.0, 4.0], "float32"), name="v")
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.SGD(0.0), [lw.Rule(".*", project=[lw.unit_norm()])],
        skip_nonfinite=True, accumulate_steps=2,
    )
    opt.build([variable])
    opt.apply([keras.ops.zeros((2,))], [variable])  # a micro-step
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable), [3.0, 4.0])
    opt.apply([keras.ops.convert_to_tensor(np.array([np.nan, 0.0], "float32"))], [variable])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable), [3.0, 4.0])
    for _ in range(2):
        opt.apply([keras.ops.zeros((2,))], [variable])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(variable), [0.6, 0.8], rtol=1e-5)


def test_frozen_variables_are_not_projected():
    frozen = keras.Variable(np.array([3.0, 4.0], "float32"), name="frozen")
    free = keras.Variable(np.array([3.0, 4.0], "float32"), name="free")
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.SGD(0.0),
        [lw.Rule(".*", project=[lw.unit_norm()]), lw.Rule("frozen", frozen=True)],
    )
    opt.build([frozen, free])
    opt.apply([keras.ops.zeros((2,))] * 2, [frozen, free])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(frozen), [3.0, 4.0])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(free), [0.6, 0.8], rtol=1e-5)


def test_wrong_shape_fails_at_build():
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.SGD(0.1), [lw.Rule(".*", project=[lambda w: w[0]])]
    )
    with pytest.raises(TypeError, match="must keep the variables' shapes"):
        opt.build([keras.Variable(np.ones((2, 2), "float32"), name="v")])
    assert not opt.built
