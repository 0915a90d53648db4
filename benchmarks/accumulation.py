"""Gradient-accumulation micro-step cost and optimizer state bytes.

Side by side in one process, per backend, on the 12-block residual MLP of
`fit_overhead.py` (AdamW, 13 rule groups):

- `full`: a real step every batch (plain AdamW);
- `fwd_bwd`: forward + backward with no optimizer work (every variable
  frozen by a rule with `skip_frozen_gradients=False`: the trainer computes
  all gradients, the optimizer drops them; XLA may then skip computing
  them, so on JAX this is close to a forward pass);
- `sgd`: plain SGD, forward + backward + one pass over the gradients (the
  traffic of adding them to accumulators): the floor a micro-step can reach;
- `ours_micro`: `LayerwiseOptimizer(accumulate_steps=10**6)`: every step in
  the measurement is a micro-step (gradients added to the accumulators);
- `keras_micro`: Keras' own `AdamW(gradient_accumulation_steps=10**6)`.

Epochs alternate between the configurations (medians over repeats). Also
prints the optimizer state bytes of each configuration, with EMA on too.

Usage:
    KERAS_BACKEND=jax python benchmarks/accumulation.py [--jit] [--repeats 7]
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(__file__))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import layerwise as lw  # noqa: E402
from common import (  # noqa: E402
    alternating_times, classification_data, epoch_seconds, fit_arguments, state_bytes,
)
from fit_overhead import WIDTH, build_model, rules  # noqa: E402

BIG = 10**6


def make(kind, jit_compile):
    model = build_model(seed=0)
    if kind == "full":
        optimizer = keras.optimizers.AdamW(1e-3, weight_decay=0.01)
    elif kind == "fwd_bwd":
        # Gradients computed (flags left alone), then dropped. XLA may drop
        # their computation too (JAX), so `sgd` is the fair floor there.
        optimizer = lw.LayerwiseOptimizer(
            keras.optimizers.AdamW(1e-3, weight_decay=0.01), [lw.Rule(".*", frozen=True)],
            skip_frozen_gradients=False,
        )
    elif kind == "sgd":
        # Forward + backward + one read-modify-write pass over gradient-sized
        # buffers: the same memory traffic as adding to the accumulators.
        optimizer = keras.optimizers.SGD(1e-3)
    elif kind == "ours_micro":
        optimizer = lw.LayerwiseOptimizer(
            keras.optimizers.AdamW(1e-3, weight_decay=0.01), rules(), accumulate_steps=BIG
        )
    elif kind == "keras_micro":
        optimizer = keras.optimizers.AdamW(1e-3, weight_decay=0.01, gradient_accumulation_steps=BIG)
    model.compile(
        optimizer,
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
    )
    return model


def main():
    args = fit_arguments(repeats=7, steps=60, batch_size=64).parse_args()
    x, y = classification_data(args.steps, args.batch_size, WIDTH)

    kinds = ("full", "fwd_bwd", "sgd", "ours_micro", "keras_micro")
    models = {k: make(k, args.jit) for k in kinds}
    runs = {k: (lambda m: lambda: epoch_seconds(m, x, y, args.batch_size))(models[k]) for k in kinds}
    for run in runs.values():  # warm-up: trace / compile
        run()
    med, _ = alternating_times(runs, args.repeats, per_run=args.steps)
    print(f"backend={keras.backend.backend()} jit_compile={args.jit} steps={args.steps} "
          f"batch={args.batch_size} repeats={args.repeats}")
    for k in kinds:
        print(f"  {k:<12} median step {med[k] * 1e3:8.3f} ms  "
              f"(/fwd_bwd {med[k] / med['fwd_bwd']:.3f}, /sgd {med[k] / med['sgd']:.3f}, "
              f"/full {med[k] / med['full']:.3f})")

    params = sum(int(np.prod(v.shape)) * 4 for v in models["full"].trainable_variables)
    print(f"  state bytes (model weights {params}):")
    configs = {
        "AdamW": lambda m: keras.optimizers.AdamW(1e-3),
        "AdamW+keras accumulation+use_ema": lambda m: keras.optimizers.AdamW(
            1e-3, gradient_accumulation_steps=4, use_ema=True),
        "Layerwise(AdamW, 13 groups)": lambda m: lw.LayerwiseOptimizer(
            keras.optimizers.AdamW(1e-3), rules()),
        "Layerwise + accumulate_steps=4": lambda m: lw.LayerwiseOptimizer(
            keras.optimizers.AdamW(1e-3), rules(), accumulate_steps=4),
        "Layerwise + accumulate_steps=4 + ema": lambda m: lw.LayerwiseOptimizer(
            keras.optimizers.AdamW(1e-3), rules(), accumulate_steps=4, ema=0.999),
        "Layerwise + accumulate + ema, blocks 0-10 frozen": lambda m: lw.LayerwiseOptimizer(
            keras.optimizers.AdamW(1e-3),
            [lw.Rule(r"block_([0-9]|10)_.*", frozen=True)], accumulate_steps=4, ema=0.999),
    }
    for name, factory in configs.items():
        model = build_model(seed=0)
        optimizer = factory(model)
        optimizer.build(model.trainable_variables)
        print(f"    {name:<50} {state_bytes(optimizer):>10}  "
              f"({state_bytes(optimizer) / params:.2f} x weights)")


if __name__ == "__main__":
    main()
