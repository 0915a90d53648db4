"""Trains the same model on one device and under
`keras.distribution.DataParallel` over four host CPU devices (JAX), and
prints the largest weight and optimizer-state differences.

Run in its own process: the number of host devices (`XLA_FLAGS`) must be set
before JAX starts. The rules cover the three kinds of per-variable work the
optimizer does: scaled learning rates, a frozen variable, and a gradient
transform (`clip_by_global_norm`, which must see the global gradient).
"""

import os
import sys

os.environ["KERAS_BACKEND"] = "jax"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
_FLAG = "--xla_force_host_platform_device_count=4"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()

import keras
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

import layerwise as lw
from tests import helpers

N_DEVICES = 4

# Record how the trainer places each batch (Keras' JAX trainer puts every
# batch through this function), to show the data is split across devices.
from keras.src.backend.jax import trainer as _jax_trainer

_batch_shards = []
_distribute_data = _jax_trainer._distribute_data


def _recording_distribute_data(data, *args, **kwargs):
    data = _distribute_data(data, *args, **kwargs)
    x = data[0]
    _batch_shards.append(tuple(s.data.shape for s in x.addressable_shards))
    return data


_jax_trainer._distribute_data = _recording_distribute_data


def _value(v):
    return np.array(keras.ops.convert_to_numpy(v))


def train(distribution, clip=True, group=False, update=False, **options):
    keras.distribution.set_distribution(distribution)
    try:
        model = helpers.mlp(seed=0)
        initial = helpers.weights(model)
        opt = lw.LayerwiseOptimizer(
            keras.optimizers.AdamW(0.01, weight_decay=0.05),
            [
                lw.Rule("l0/.*", lr_scale=0.1, name="body",
                        update=[lw.trust_ratio(), lw.cautious()] if update else []),
                lw.Rule(
                    "l1/.*", lr_scale=0.5, weight_decay=0.0,
                    gradient=[lw.clip_by_global_norm(0.05)] if clip else [],
                    update=[lw.relative_gradient_norm()] if update else [],
                    project=[lw.max_norm(0.5)] if update else [],
                    name="mid",
                ),
                lw.Rule("l2/bias", frozen=True, name="frozen"),
            ] + ([lw.Rule("l2/kernel", optimizer=keras.optimizers.SGD(0.05, momentum=0.9), name="head")]
                 if group else []),
            **options,
        )
        model.compile(opt, "mse", jit_compile=True)
        _batch_shards.clear()
        x, y = helpers.data(n=64)
        # Global batch 16 = 4 per device; 4 steps per epoch, 3 epochs.
        model.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0)
        kernel = model.get_layer("l0").kernel
        first_batch = _batch_shards[0] if _batch_shards else None
        _batch_shards.clear()
        info = {
            "batch_shards": first_batch,
            "weight_devices": len(kernel.value.sharding.device_set),
            "weight_replicated": kernel.value.sharding.is_fully_replicated,
            "slot_devices": min(
                len(v.value.sharding.device_set) for v in opt.variables
            ),
        }
        return (
            initial,
            helpers.weights(model),
            [_value(v) for v in opt.variables],
            int(_value(opt.iterations)),
            info,
        )
    finally:
        keras.distribution.set_distribution(None)


devices = keras.distribution.list_devices("cpu")
assert len(devices) == N_DEVICES, devices
single = train(None)
keras.backend.clear_session()
parallel = train(keras.distribution.DataParallel(devices=devices))
keras.backend.clear_session()
unclipped = train(None, clip=False)

print("devices", len(devices))
print("placement_single", single[4])
print("placement_parallel", parallel[4])
print("initial_max_abs_diff", max(float(np.max(np.abs(a - b))) for a, b in zip(single[0], parallel[0])))
print("iterations", single[3], parallel[3])
print("frozen_moved", float(np.max(np.abs(parallel[1][5] - parallel[0][5]))))
print("optimizer_state_max_abs_diff", max(float(np.max(np.abs(a - b))) for a, b in zip(single[2], parallel[2])))
# The clip must bind for the comparison to test it: without it the weights differ.
print("clip_effect", max(float(np.max(np.abs(a - b))) for a, b in zip(single[1], unclipped[1])))
print("max_abs_diff", max(float(np.max(np.abs(a - b))) for a, b in zip(single[1], parallel[1])))

# Accumulation (2 micro-batches per step), EMA, non-finite skipping,
# diagnostics and update transforms and projections: the conditional step
# and the extra state under DataParallel.
OPTIONS = dict(accumulate_steps=2, ema=0.5, skip_nonfinite=True, log=("grad_norm",), group=True,
               update=True)
keras.backend.clear_session()
single_options = train(None, **OPTIONS)
keras.backend.clear_session()
parallel_options = train(keras.distribution.DataParallel(devices=devices), **OPTIONS)
print("iterations_options", single_options[3], parallel_options[3])
print("max_abs_diff_options", max(float(np.max(np.abs(a - b))) for a, b in zip(single_options[1], parallel_options[1])))
print("optimizer_state_max_abs_diff_options", max(float(np.max(np.abs(a - b))) for a, b in zip(single_options[2], parallel_options[2])))
