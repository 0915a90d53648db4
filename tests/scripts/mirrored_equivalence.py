"""Trains the same model on one device and under MirroredStrategy over two
logical CPUs, and prints the largest weight difference. Run in its own
process: logical devices must be configured before TensorFlow starts."""

import os
import sys

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * 2
)

import keras  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

import layerwise as lw  # noqa: E402
from tests import helpers  # noqa: E402


# One strategy for every mirrored run: a second MirroredStrategy in the same
# process can reuse the first one's collective instance keys.
MIRRORED = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


def train(strategy):
    with strategy.scope():
        model = helpers.mlp()
        opt = lw.LayerwiseOptimizer(
            keras.optimizers.Nadam(0.01, weight_decay=0.01),
            [
                lw.Rule("l0/.*", lr_scale=0.1),
                lw.Rule("l1/.*", lr_scale=0.5, weight_decay=0.0),
                lw.Rule("l2/bias", frozen=True),
            ],
        )
        model.compile(opt, "mse")
    x, y = helpers.data()
    model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    return helpers.weights(model)


single = train(tf.distribute.get_strategy())
keras.backend.clear_session()
mirrored = train(MIRRORED)
print("max_abs_diff", max(float(np.max(np.abs(a - b))) for a, b in zip(single, mirrored)))


def train_groups(strategy):
    """Group optimizers: Muon on a hidden matrix, SGD with momentum and its
    own clipnorm on the head, AdamW (decay routed by Keras) elsewhere."""
    with strategy.scope():
        model = helpers.mlp()
        opt = lw.LayerwiseOptimizer(
            keras.optimizers.AdamW(0.01, weight_decay=0.05),
            [
                lw.Rule("l1/kernel", optimizer=keras.optimizers.Muon(0.02, weight_decay=0.1)),
                lw.Rule("l2/.*", optimizer=keras.optimizers.SGD(0.05, momentum=0.9, clipnorm=0.1)),
                lw.Rule("l0/.*", lr_scale=0.5),
            ],
        )
        model.compile(opt, "mse")
    x, y = helpers.data()
    model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    state = [np.array(keras.ops.convert_to_numpy(v)) for v in opt.variables]
    return helpers.weights(model) + state


keras.backend.clear_session()
single = train_groups(tf.distribute.get_strategy())
keras.backend.clear_session()
mirrored = train_groups(MIRRORED)
print("max_abs_diff_groups", max(float(np.max(np.abs(a - b))) for a, b in zip(single, mirrored)))


def train_with_transforms(strategy, batch_size=16, callbacks=(), **options):
    """Rule transforms (gradient and update transforms, projections), the
    inner global clip, non-finite skipping, EMA and diagnostics: each must
    see the all-reduced gradient. Returns the
    weights and averages, and the optimizer."""
    with strategy.scope():
        model = helpers.mlp()
        opt = lw.LayerwiseOptimizer(
            keras.optimizers.Adam(0.01, global_clipnorm=0.5),
            [
                lw.Rule("l0/.*", lr_scale=0.1, gradient=lw.clip_by_global_norm(0.05),
                        update=[lw.trust_ratio(), lw.cautious()]),
                lw.Rule("l1/.*", gradient=lw.clip_by_norm(0.02),
                        update=[lw.relative_gradient_norm()], project=[lw.max_norm(0.5)]),
            ],
            ema=0.5,
            log=("grad_norm",),
            **options,
        )
        model.compile(opt, "mse")
    x, y = helpers.data()
    model.fit(x, y, batch_size=batch_size, epochs=2, shuffle=False, verbose=0,
              callbacks=list(callbacks))
    averages = [np.array(keras.ops.convert_to_numpy(a)) for _, a in opt.ema_pairs()]
    return helpers.weights(model) + averages, opt


def toy_clip(strategy):
    """Replica gradients -20/2 and -0.2/2: clipping the sum gives w = 1.0,
    clipping per replica would give 1.1."""
    x = np.ones((4, 1), "float32")
    y = np.array([[10.0], [10.0], [0.1], [0.1]], "float32")
    with strategy.scope():
        inputs = keras.Input((1,))
        model = keras.Model(inputs, keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")(inputs))
        model.compile(lw.LayerwiseOptimizer(keras.optimizers.SGD(1.0), [lw.Rule(".*", gradient=lw.clip_by_global_norm(1.0))]), "mse")
    model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    return float(keras.ops.convert_to_numpy(model.trainable_variables[0])[0, 0])


keras.backend.clear_session()
single, _ = train_with_transforms(tf.distribute.get_strategy())
keras.backend.clear_session()
mirrored, _ = train_with_transforms(MIRRORED)
print("max_abs_diff_transforms", max(float(np.max(np.abs(a - b))) for a, b in zip(single, mirrored)))
keras.backend.clear_session()
print("toy_w_single", toy_clip(tf.distribute.get_strategy()))
keras.backend.clear_session()
print("toy_w_mirrored", toy_clip(MIRRORED))
def train_accumulating(strategy, callbacks):
    """accumulate_steps=3 over 8 batches an epoch (cycles across epochs),
    with the transforms, EMA and diagnostics above; weights, averages and
    every optimizer variable, and the step count."""
    values, opt = train_with_transforms(
        strategy, batch_size=8, callbacks=callbacks, accumulate_steps=3
    )
    state = [np.array(keras.ops.convert_to_numpy(v)) for v in opt.variables]
    return values + state, int(keras.ops.convert_to_numpy(opt.iterations))


keras.backend.clear_session()
single, single_steps = train_accumulating(tf.distribute.get_strategy(), [])
keras.backend.clear_session()
mirrored, mirrored_steps = train_accumulating(MIRRORED, [lw.callbacks.SplitAccumulation()])
print("accumulation_steps", single_steps, mirrored_steps)
print("max_abs_diff_accumulation", max(float(np.max(np.abs(a - b))) for a, b in zip(single, mirrored)))

for option in ({"skip_nonfinite": True}, {"accumulate_steps": 2}):
    keras.backend.clear_session()
    try:
        train_with_transforms(MIRRORED, **option)
        print("refused", option, False)
    except ValueError as error:
        print("refused", option, "not supported under a tf.distribute" in str(error))
