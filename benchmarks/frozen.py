"""Frozen parameters cost nothing: ~92% of the parameters frozen by a rule
vs the same layers `trainable=False`, side by side in one process.

Model: the 12-block residual MLP of `fit_overhead.py`, blocks 0-10 frozen
(11 of 12 blocks: 92% of the parameters), AdamW. Configurations:

- `keras_untrainable`: those layers `trainable=False`, plain AdamW (the
  reference: no gradients, no slots);
- `rule_frozen`: `LayerwiseOptimizer` with `Rule(..., frozen=True)` (default
  `skip_frozen_gradients=True`: the variables are marked untrainable);
- `rule_frozen_grads_kept`: the same with `skip_frozen_gradients=False`
  (gradients computed, then dropped);
- `lr_scale_0`: "freezing" by a zero multiplier, as other tools do it
  (gradients, slots and updates paid in full).

Also: optimizer state bytes, and the cost of changing what is frozen
mid-training (`set_frozen` + `make_train_function(force=True)`: the first
epoch after the change includes the retrace).

Usage:
    KERAS_BACKEND=jax python benchmarks/frozen.py [--jit] [--repeats 7]
"""

import os
import statistics
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(__file__))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import layerwise as lw  # noqa: E402
from common import (  # noqa: E402
    classification_data, epoch_seconds, fit_arguments, instance_times, state_bytes,
)
from fit_overhead import BLOCKS, WIDTH, build_model  # noqa: E402

FROZEN = r"block_([0-9]|10)_.*"


def make(kind, jit_compile):
    model = build_model(seed=0)
    inner = keras.optimizers.AdamW(1e-3, weight_decay=0.01)
    if kind == "keras_untrainable":
        for layer in model.layers:
            if layer.name.startswith("block_") and int(layer.name.split("_")[1]) < BLOCKS - 1:
                layer.trainable = False
        optimizer = inner
    elif kind == "rule_frozen":
        optimizer = lw.LayerwiseOptimizer(inner, [lw.Rule(FROZEN, frozen=True, name="body")])
    elif kind == "rule_frozen_grads_kept":
        optimizer = lw.LayerwiseOptimizer(
            inner, [lw.Rule(FROZEN, frozen=True, name="body")], skip_frozen_gradients=False
        )
    else:
        optimizer = lw.LayerwiseOptimizer(inner, [lw.Rule(FROZEN, lr_scale=0.0, name="body")])
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=jit_compile)
    return model


def main():
    args = fit_arguments(repeats=7, steps=60, batch_size=64).parse_args()
    x, y = classification_data(args.steps, args.batch_size, WIDTH)
    kinds = ("keras_untrainable", "rule_frozen", "rule_frozen_grads_kept", "lr_scale_0")
    models = {}

    def make_run(kind):
        model = models[kind] = make(kind, args.jit)
        epoch_seconds(model, x, y, args.batch_size)  # warm-up: trace / compile
        return lambda: epoch_seconds(model, x, y, args.batch_size)

    med, spread = instance_times(make_run, kinds, args.instances, args.repeats, per_run=args.steps)
    params = sum(int(np.prod(v.shape)) for v in build_model(0).weights)
    print(f"backend={keras.backend.backend()} jit_compile={args.jit} params={params} "
          f"steps={args.steps} batch={args.batch_size} repeats={args.repeats} "
          f"instances={args.instances} (best instance; A/A = slowest/fastest instance)")
    for k in kinds:
        print(f"  {k:<24} median step {med[k] * 1e3:8.3f} ms  ratio {med[k] / med['keras_untrainable']:.3f}  "
              f"A/A {spread[k][1] / spread[k][0]:.3f}  state {state_bytes(models[k].optimizer):>9} bytes")

    # Changing what is frozen: one retrace at the next step.
    model = models["rule_frozen"]
    steady = statistics.median([epoch_seconds(model, x, y, args.batch_size) for _ in range(3)])
    model.optimizer.set_frozen("body", False)
    model.make_train_function(force=True)
    after_change = epoch_seconds(model, x, y, args.batch_size)
    print(f"  set_frozen('body', False): first epoch after it {after_change:.3f} s vs steady "
          f"(still frozen) {steady:.3f} s: retrace + fresh slots + 12x the trained parameters")


if __name__ == "__main__":
    main()
