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
mirrored = train(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
print("max_abs_diff", max(float(np.max(np.abs(a - b))) for a, b in zip(single, mirrored)))
