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
  the measurement is a micro-step (gradients added to the accumulators),
  one compiled step with a run-time conditional;
- `ours_micro_split`: the same with `layerwise.callbacks.SplitAccumulation()`
  (micro-steps and real steps compiled apart: no conditional);
- `keras_micro`: Keras' own `AdamW(gradient_accumulation_steps=10**6)`.

Epochs alternate between the configurations (medians over repeats). Also
prints the optimizer state bytes of each configuration, with EMA on too.
`--width 1024` makes the blocks 1024 wide (12.6M parameters), where the
state a conditional carries is 16x larger.

`--memory` instead measures peak memory as a function of `k`: for each `k`
in 1, 2, 4, 8, 16 a fresh process trains 2 epochs of 32 batches with
`accumulate_steps=k` (with and without `SplitAccumulation`) and reports its
peak resident set size (`ru_maxrss`), next to the same process's size after
building the model and optimizer.

Usage:
    KERAS_BACKEND=jax python benchmarks/accumulation.py [--jit] [--repeats 7] [--width 256]
    KERAS_BACKEND=jax python benchmarks/accumulation.py [--jit] --memory
"""

import argparse
import json
import os
import resource
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(__file__))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import layerwise as lw  # noqa: E402
from common import (  # noqa: E402
    classification_data, epoch_seconds, fit_arguments, instance_times, state_bytes,
)
from fit_overhead import WIDTH, build_model, rules  # noqa: E402

BIG = 10**6


def make(kind, jit_compile, width=WIDTH, k=BIG):
    model = build_model(seed=0, width=width)
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
    elif kind in ("ours_micro", "ours_micro_split"):
        optimizer = lw.LayerwiseOptimizer(
            keras.optimizers.AdamW(1e-3, weight_decay=0.01), rules(), accumulate_steps=k
        )
    elif kind == "keras_micro":
        optimizer = keras.optimizers.AdamW(1e-3, weight_decay=0.01, gradient_accumulation_steps=BIG)
    model.compile(
        optimizer,
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
    )
    return model


def _callbacks(kind):
    return [lw.callbacks.SplitAccumulation()] if kind == "ours_micro_split" else None


def peak_memory(k, split, jit_compile, width):
    """In this (fresh) process: trains with `accumulate_steps=k`, returns
    the resident set size after building and the peak, in bytes."""
    steps, batch_size = 32, 64
    x, y = classification_data(steps, batch_size, width)
    model = make("ours_micro", jit_compile, width=width, k=k)
    model.optimizer.build(model.trainable_variables)
    built = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    callbacks = [lw.callbacks.SplitAccumulation()] if split and k > 1 else None
    model.fit(x, y, batch_size=batch_size, epochs=2, shuffle=False, verbose=0,
              callbacks=callbacks)
    return built, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def memory_table(args):
    print(f"backend={keras.backend.backend()} jit_compile={args.jit} width={args.width}: "
          "peak RSS of a fresh process, 2 epochs x 32 batches of 64")
    for split in (False, True):
        for k in (1, 2, 4, 8, 16):
            if split and k == 1:
                continue
            command = [sys.executable, __file__, "--width", str(args.width),
                       "--memory-child", json.dumps([k, split])] + (["--jit"] if args.jit else [])
            out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            built, peak = json.loads(out.strip().splitlines()[-1])
            print(f"  k={k:<3} split={str(split):<5} after build {built / 2**20:8.1f} MiB  "
                  f"peak {peak / 2**20:8.1f} MiB  (peak - build {(peak - built) / 2**20:7.1f} MiB)")


def main():
    parser = fit_arguments(repeats=7, steps=60, batch_size=64)
    parser.add_argument("--width", type=int, default=WIDTH)
    parser.add_argument("--memory", action="store_true")
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        k, split = json.loads(args.memory_child)
        print(json.dumps(peak_memory(k, split, args.jit, args.width)))
        return
    if args.memory:
        memory_table(args)
        return
    x, y = classification_data(args.steps, args.batch_size, args.width)

    kinds = ("full", "fwd_bwd", "sgd", "ours_micro", "ours_micro_split", "keras_micro")

    def make_run(kind):
        model = make(kind, args.jit, width=args.width)
        callbacks = _callbacks(kind)
        epoch_seconds(model, x, y, args.batch_size, callbacks)  # warm-up: trace / compile
        return lambda: epoch_seconds(model, x, y, args.batch_size, callbacks)

    med, spread = instance_times(make_run, kinds, args.instances, args.repeats, per_run=args.steps)
    params = sum(int(np.prod(v.shape)) for v in build_model(0, args.width).trainable_variables)
    print(f"backend={keras.backend.backend()} jit_compile={args.jit} params={params} "
          f"steps={args.steps} batch={args.batch_size} repeats={args.repeats} "
          f"instances={args.instances} (best instance; A/A spread = max/min over instances)")
    for k in kinds:
        print(f"  {k:<16} median step {med[k] * 1e3:8.3f} ms  "
              f"(/fwd_bwd {med[k] / med['fwd_bwd']:.3f}, /sgd {med[k] / med['sgd']:.3f}, "
              f"/full {med[k] / med['full']:.3f})  A/A {spread[k][1] / spread[k][0]:.3f}")

    if args.width != WIDTH:
        return
    params = sum(int(np.prod(v.shape)) * 4 for v in build_model(0).trainable_variables)
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
