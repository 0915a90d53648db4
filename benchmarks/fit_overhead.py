"""Median `fit` step time: LayerwiseOptimizer with 13 rule groups vs the
plain inner optimizer, measured side by side in one process.

Each repeat trains every model for one epoch of `--steps` steps, in
alternating order (ABBA...), after a warm-up epoch that absorbs tracing and
compilation. `--instances` (default 2) identical models of each
configuration are built: identical models in one process can differ by far
more than timing noise (where their buffers landed), so each configuration
keeps its best instance and the spread between its instances (the A/A
control) is printed: a ratio inside that spread is not a signal.

Usage:
    KERAS_BACKEND=jax python benchmarks/fit_overhead.py [--jit] [--repeats 9]
    KERAS_BACKEND=torch python benchmarks/fit_overhead.py --clock cpu --threads 1
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import layerwise as lw  # noqa: E402
from common import (  # noqa: E402
    add_clock_arguments, epoch_seconds, fit_arguments, instance_times, set_threads,
)

BLOCKS = 12
WIDTH = 256


def build_model(seed, width=WIDTH):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((width,))
    x = inputs
    for i in range(BLOCKS):
        h = keras.layers.Dense(width, activation="gelu", name=f"block_{i}_dense")(x)
        x = keras.layers.LayerNormalization(name=f"block_{i}_norm")(x + h)
    outputs = keras.layers.Dense(10, name="head")(x)
    return keras.Model(inputs, outputs)


def rules(decay=0.8):
    # 12 blocks at decay**(12 - i), the head unmatched: 13 update groups.
    return [
        lw.Rule(f"block_{i}_.*", lr_scale=decay ** (BLOCKS - i), name=f"block_{i}")
        for i in range(BLOCKS)
    ]


def make(kind, jit_compile):
    model = build_model(seed=0)
    inner = keras.optimizers.AdamW(1e-3, weight_decay=0.01)
    if kind == "plain":
        optimizer = inner
    elif kind == "layerwise":
        optimizer = lw.LayerwiseOptimizer(inner, rules())
    else:  # per-rule diagnostics on (issue: cost when on)
        optimizer = lw.LayerwiseOptimizer(
            inner, rules(), log=("lr", "grad_norm", "update_ratio")
        )
    model.compile(
        optimizer,
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
    )
    return model


def main():
    parser = fit_arguments(repeats=9, steps=100, batch_size=64)
    parser.add_argument("--log", action="store_true",
                        help="also time LayerwiseOptimizer(log=(lr, grad_norm, update_ratio))")
    add_clock_arguments(parser)
    args = parser.parse_args()
    threads = set_threads(args.threads)

    rng = np.random.default_rng(0)
    n = args.steps * args.batch_size
    x = rng.normal(size=(n, WIDTH)).astype("float32")
    y = rng.integers(0, 10, size=(n,)).astype("int32")

    kinds = ("plain", "layerwise") + (("layerwise_log",) if args.log else ())
    first, built = {}, {}

    def make_run(kind):
        model = built[kind] = make(kind, args.jit)
        first[kind] = epoch_seconds(model, x, y, args.batch_size)  # warm-up: trace / compile
        return lambda: epoch_seconds(model, x, y, args.batch_size)

    med, spread = instance_times(
        make_run, kinds, args.instances, args.repeats, per_run=args.steps, clock=args.clock
    )
    groups = len(built["layerwise"].optimizer.plan.groups)
    params = sum(int(np.prod(v.shape)) for v in build_model(0).trainable_variables)
    print(
        f"backend={keras.backend.backend()} jit_compile={args.jit} params={params} "
        f"groups={groups} steps={args.steps} batch={args.batch_size} repeats={args.repeats} "
        f"instances={args.instances} clock={args.clock} threads={threads} "
        "(best instance; A/A = slowest/fastest instance)"
    )
    for kind in kinds:
        print(
            f"  {kind:<13} median step {med[kind] * 1e3:8.3f} ms "
            f"(A/A {spread[kind][1] / spread[kind][0]:.3f}); first epoch {first[kind]:.2f} s"
        )
    print(f"  ratio layerwise/plain: {med['layerwise'] / med['plain']:.3f}")
    if args.log:
        print(f"  ratio layerwise_log/layerwise: {med['layerwise_log'] / med['layerwise']:.3f}")


if __name__ == "__main__":
    main()
