"""Optimizer apply alone: LayerwiseOptimizer vs the plain inner optimizer as
the number of groups grows, and the bytes one apply moves vs the machine's
memory bandwidth.

Variables: 48 float32 matrices of 512x384 (9.4M parameters, 38 MB; larger
than the caches, so an AdamW apply is memory-bound). Gradients are fixed
random tensors. Configurations, timed alternately in one process:

- `plain`: AdamW(1e-3, weight_decay=0.01);
- `groups_1`: LayerwiseOptimizer without rules (one group);
- `groups_13`: 12 rules of 4 variables with `lr_scale` 0.8**k, 13 groups;
- `groups_48`: one rule per variable (48 groups).

The apply is compiled as each backend runs it in `fit`: a `tf.function`
(`--jit`: with XLA) on TensorFlow, `jax.jit` of `stateless_apply` with
donated state on JAX, eager on torch. Bytes per AdamW apply: read w, g, m, v
and write w, m, v = 28 bytes per parameter; the bandwidth reference is
NumPy's copy of a 256 MB array (read + write).

Usage:
    KERAS_BACKEND=jax python benchmarks/apply_only.py [--jit] [--repeats 15]
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import layerwise as lw  # noqa: E402

N_VARS, SHAPE = 48, (512, 384)


def make_variables():
    rng = np.random.default_rng(0)
    return [
        keras.Variable(rng.normal(size=SHAPE).astype("float32") * 0.05, name=f"w{i}")
        for i in range(N_VARS)
    ]


def make_optimizer(kind, variables):
    inner = keras.optimizers.AdamW(1e-3, weight_decay=0.01)
    if kind == "plain":
        return inner
    if kind == "groups_1":
        return lw.LayerwiseOptimizer(inner)
    if kind == "groups_13":
        rules = [lw.Rule(variables[4 * k: 4 * k + 4], lr_scale=0.8 ** (k + 1)) for k in range(12)]
        return lw.LayerwiseOptimizer(inner, rules[:-1])  # last 4 unmatched: 12 groups + 1
    rules = [lw.Rule(v, lr_scale=0.5 + 0.01 * i) for i, v in enumerate(variables)]
    return lw.LayerwiseOptimizer(inner, rules)


def compiled_apply(optimizer, variables, grads, jit):
    backend = keras.backend.backend()
    optimizer.build(variables)
    if backend == "tensorflow":
        import tensorflow as tf

        fn = tf.function(lambda: optimizer.apply(grads, variables), jit_compile=jit)
        return lambda: fn()
    if backend == "jax":
        import jax

        def step(opt_values, train_values, grad_values):
            return optimizer.stateless_apply(opt_values, grad_values, train_values)

        step = jax.jit(step, donate_argnums=(0, 1))
        state = {
            "opt": [v.value for v in optimizer.variables],
            "train": [v.value for v in variables],
        }

        def run():
            state["train"], state["opt"] = step(state["opt"], state["train"], grads)
            jax.block_until_ready(state["train"])

        return run
    import torch

    def run():
        with torch.no_grad():
            optimizer.apply(grads, variables)

    return run


def copy_bandwidth():
    a = np.ones(64 * 2**20, "float32")
    b = np.empty_like(a)
    times = []
    for _ in range(7):
        start = time.perf_counter()
        np.copyto(b, a)
        times.append(time.perf_counter() - start)
    return 2 * a.nbytes / statistics.median(times)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--jit", action="store_true")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--calls", type=int, default=10)
    args = parser.parse_args()
    kinds = ("plain", "groups_1", "groups_13", "groups_48")
    rng = np.random.default_rng(1)
    grads_np = [rng.normal(size=SHAPE).astype("float32") for _ in range(N_VARS)]
    runs, first = {}, {}
    for kind in kinds:
        variables = make_variables()
        grads = [keras.ops.convert_to_tensor(g) for g in grads_np]
        optimizer = make_optimizer(kind, variables)
        run = compiled_apply(optimizer, variables, grads, args.jit)
        start = time.perf_counter()
        run()
        first[kind] = time.perf_counter() - start
        runs[kind] = run
    times = {k: [] for k in kinds}
    for r in range(args.repeats):
        for kind in kinds if r % 2 == 0 else tuple(reversed(kinds)):
            start = time.perf_counter()
            for _ in range(args.calls):
                runs[kind]()
            times[kind].append((time.perf_counter() - start) / args.calls)
    med = {k: statistics.median(v) for k, v in times.items()}
    params = N_VARS * SHAPE[0] * SHAPE[1]
    moved = 28 * params
    bandwidth = copy_bandwidth()
    print(f"backend={keras.backend.backend()} jit={args.jit} params={params} "
          f"repeats={args.repeats}x{args.calls} copy_bandwidth={bandwidth / 1e9:.1f} GB/s")
    for kind in kinds:
        print(f"  {kind:<10} median apply {med[kind] * 1e3:8.3f} ms  ratio {med[kind] / med['plain']:.3f}  "
              f"min {min(times[kind]) * 1e3:.3f}  first call {first[kind]:.2f} s  "
              f"{moved / med[kind] / 1e9:.1f} GB/s ({moved / med[kind] / bandwidth:.2f} of copy)")


if __name__ == "__main__":
    main()
