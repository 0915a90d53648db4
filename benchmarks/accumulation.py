"""Gradient-accumulation micro-step cost and optimizer state bytes.

Side by side in one process, per backend, on the 12-block residual MLP of
`fit_overhead.py` (AdamW, 13 rule groups):

- `full`: a real step every batch (plain AdamW);
- `fwd_bwd`: forward + backward with no optimizer work (every variable
  frozen by a rule: the trainer still computes all gradients, the optimizer
  returns at once) — the floor a micro-step can reach;
- `ours_micro`: `LayerwiseOptimizer(accumulate_steps=10**6)`: every step in
  the measurement is a micro-step (gradients added to the accumulators);
- `keras_micro`: Keras' own `AdamW(gradient_accumulation_steps=10**6)`.

Epochs alternate between the configurations (medians over repeats). Also
prints the optimizer state bytes of each configuration, with EMA on too.

Usage:
    KERAS_BACKEND=jax python benchmarks/accumulation.py [--jit] [--repeats 7]
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(__file__))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import layerwise as lw  # noqa: E402
from fit_overhead import WIDTH, build_model, rules  # noqa: E402

BIG = 10**6


def make(kind, jit_compile):
    model = build_model(seed=0)
    if kind == "full":
        optimizer = keras.optimizers.AdamW(1e-3, weight_decay=0.01)
    elif kind == "fwd_bwd":
        optimizer = lw.LayerwiseOptimizer(
            keras.optimizers.AdamW(1e-3, weight_decay=0.01), [lw.Rule(".*", frozen=True)]
        )
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


def state_bytes(optimizer):
    return sum(
        int(np.prod(v.shape)) * np.dtype(keras.backend.standardize_dtype(v.dtype)).itemsize
        for v in optimizer.variables
    )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--jit", action="store_true")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    n = args.steps * args.batch_size
    x = rng.normal(size=(n, WIDTH)).astype("float32")
    y = rng.integers(0, 10, size=(n,)).astype("int32")

    kinds = ("full", "fwd_bwd", "ours_micro", "keras_micro")
    models = {k: make(k, args.jit) for k in kinds}
    for model in models.values():  # warm-up: trace / compile
        model.fit(x, y, batch_size=args.batch_size, epochs=1, shuffle=False, verbose=0)
    times = {k: [] for k in kinds}
    for r in range(args.repeats):
        order = kinds if r % 2 == 0 else tuple(reversed(kinds))
        for k in order:
            start = time.perf_counter()
            models[k].fit(x, y, batch_size=args.batch_size, epochs=1, shuffle=False, verbose=0)
            times[k].append((time.perf_counter() - start) / args.steps)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"backend={keras.backend.backend()} jit_compile={args.jit} steps={args.steps} "
          f"batch={args.batch_size} repeats={args.repeats}")
    for k in kinds:
        print(f"  {k:<12} median step {med[k] * 1e3:8.3f} ms  "
              f"(/fwd_bwd {med[k] / med['fwd_bwd']:.3f}, /full {med[k] / med['full']:.3f})")

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
