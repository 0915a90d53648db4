"""Optimizer apply alone: LayerwiseOptimizer vs the plain inner optimizer as
the number of groups grows, and the bytes one apply moves vs the machine's
memory bandwidth.

Variables: 48 float32 matrices of 512x384 (9.4M parameters, 38 MB; larger
than the caches, so an AdamW apply is memory-bound). Gradients are fixed
random tensors. Configurations, timed alternately in one process:

- `plain`: AdamW(1e-3, weight_decay=0.01);
- `groups_1`: LayerwiseOptimizer without rules (one group);
- `groups_13`: 12 rules with `lr_scale` 0.8**k over all variables but the
  last two, 13 groups (`group_scales`);
- `per_variable`: one rule per variable (48 groups; 50 with `--variables mlp`);
- `keras_1`, `keras_13` (torch): no wrapper: one group, or the 13 groups
  of `groups_13`, as bare calls of Keras' own decay and update rule at
  rates computed once (per group one decay and one
  `_backend_update_step`, then the step count). `keras_13` is the floor
  of any wrapper that runs Keras' rule once per rate: `keras_13 -
  keras_1` is Keras' own cost of 12 more calls, and `(groups_13 -
  groups_1) - (keras_13 - keras_1)` what the wrapper adds for them.

The apply is compiled as each backend runs it in `fit`: a `tf.function`
(`--jit`: with XLA) on TensorFlow, `jax.jit` of `stateless_apply` with
donated state on JAX (returned in the order it is donated, as Keras' JAX
trainer does), eager on torch. Two instances of each configuration are
built and timed alternately; each keeps its best instance, and the spread
between instances (the A/A control) is printed. Bytes per AdamW apply: read
w, g, m, v and write w, m, v = 28 bytes per parameter; the bandwidth
reference is NumPy copying a 256 MB array (read + write), one thread per
core.

`--variables mlp` times the apply on the 50 small variables of the residual
MLP of `fit_overhead.py` instead (798k parameters), where fixed costs per
update call show: the difference between 13 groups and 1, divided by 12,
is the cost of one more group. On torch that difference also holds what
splitting the fused passes into groups changes in cache use (13 groups of
~1 MB of state stay in cache across the passes, one of 13 MB does not);
`--variables tiny` (the MLP's 50 variables at 8 elements each) leaves only
the fixed costs per call.

Usage:
    KERAS_BACKEND=jax python benchmarks/apply_only.py [--jit] [--repeats 15] [--variables mlp]
    KERAS_BACKEND=torch python benchmarks/apply_only.py --variables mlp --clock cpu --threads 1 \
        --kinds plain,groups_1,groups_13,keras_1,keras_13
"""

import argparse
import concurrent.futures
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import layerwise as lw  # noqa: E402
from common import add_clock_arguments, instance_times, set_threads  # noqa: E402
from layerwise._internals import optimizers as internals  # noqa: E402

KINDS = ("plain", "groups_1", "groups_13", "per_variable", "keras_1", "keras_13")

N_VARS, SHAPE = 48, (512, 384)
# `--variables mlp`: the 50 variables of `fit_overhead.py`'s residual MLP
# (12 blocks of Dense 256x256 + bias, LayerNormalization gamma + beta, and a
# 256x10 head; 798k parameters): small tensors, where fixed per-call costs
# show; the same rules give 13 groups (one per block, head unmatched).
MLP_SHAPES = [(256, 256), (256,), (256,), (256,)] * 12 + [(256, 10), (10,)]


def shapes(kind="matrices"):
    if kind == "tiny":
        return [(8,)] * len(MLP_SHAPES)
    return [SHAPE] * N_VARS if kind == "matrices" else MLP_SHAPES


def make_variables(kind="matrices"):
    rng = np.random.default_rng(0)
    return [
        keras.Variable(rng.normal(size=shape).astype("float32") * 0.05, name=f"w{i}")
        for i, shape in enumerate(shapes(kind))
    ]


def group_scales(variables):
    """`groups_13`'s 13 groups: all variables but the last two in 12
    consecutive chunks, chunk `k` at `0.8**(k + 1)`, and the last two at 1
    (for the MLP: its 12 blocks and its head, as in `fit_overhead.py`)."""
    chunks = np.array_split(np.arange(len(variables) - 2), 12)
    groups = [([variables[i] for i in chunk], 0.8 ** (k + 1)) for k, chunk in enumerate(chunks)]
    return groups + [(variables[-2:], 1.0)]


def make_optimizer(kind, variables):
    inner = keras.optimizers.AdamW(1e-3, weight_decay=0.01)
    if kind in ("plain", "keras_1", "keras_13"):
        return inner
    if kind == "groups_1":
        return lw.LayerwiseOptimizer(inner)
    if kind == "groups_13":
        rules = [lw.Rule(members, lr_scale=scale) for members, scale in group_scales(variables)[:-1]]
        return lw.LayerwiseOptimizer(inner, rules)  # the last two unmatched: 13 groups
    rules = [lw.Rule(v, lr_scale=0.5 + 0.01 * i) for i, v in enumerate(variables)]
    return lw.LayerwiseOptimizer(inner, rules)


def bare_group_calls(optimizer, variables, grads, groups):
    """`keras_<groups>`'s apply: Keras' decay and update rule once per
    group (all variables, or those of `group_scales`), at rates computed
    here once, then the step count."""
    rate = float(optimizer.learning_rate)
    calls = []
    pairs = list(zip(variables, grads))
    for members, scale in group_scales(pairs) if groups == 13 else [(pairs, 1.0)]:
        lr = keras.ops.convert_to_tensor(rate * scale, "float32")
        calls.append(([v for v, _ in members], [g for _, g in members], lr))

    def apply():
        with internals.update_context():
            for group_vars, group_grads, lr in calls:
                internals.decay_weights(optimizer, group_vars, optimizer.weight_decay, lr)
                internals.backend_update_step(optimizer, group_grads, group_vars, lr)
            optimizer.iterations.assign_add(1)

    return apply


def jitted_apply(optimizer):
    """JAX: `(train_values, opt_values, grads) -> (train_values, opt_values)`,
    `stateless_apply` jitted with both states donated.

    The donated state comes in the order it goes out, as in Keras' JAX
    trainer: JAX pairs donated inputs with outputs of the same shape in
    order, so `(opt, train) -> (train, opt)` would alias each weight to a
    slot and make XLA copy every buffer (see jax_groups.py).
    """
    import jax

    def step(train_values, opt_values, grad_values):
        return optimizer.stateless_apply(opt_values, grad_values, train_values)

    return jax.jit(step, donate_argnums=(0, 1))


def compiled_apply(optimizer, variables, grads, jit, bare=None):
    """The apply to time, as `fit` runs it on the backend; `bare`: the
    number of groups of a `keras_<n>` configuration (torch only)."""
    backend = keras.backend.backend()
    optimizer.build(variables)
    if bare and backend != "torch":
        raise ValueError(f"`keras_<n>` is timed on torch only. Received: backend={backend}")
    if backend == "tensorflow":
        import tensorflow as tf

        fn = tf.function(lambda: optimizer.apply(grads, variables), jit_compile=jit)
        return lambda: fn()
    if backend == "jax":
        import jax

        step = jitted_apply(optimizer)
        state = {
            "train": [v.value for v in variables],
            "opt": [v.value for v in optimizer.variables],
        }

        def run():
            state["train"], state["opt"] = step(state["train"], state["opt"], grads)
            jax.block_until_ready(state["train"])

        return run
    import torch

    if bare:
        return bare_group_calls(optimizer, variables, grads, bare)

    def run():
        with torch.no_grad():
            optimizer.apply(grads, variables)

    return run


def copy_bandwidth():
    """Bytes per second (read + write) of copying 256 MB with one NumPy
    copy per core, in threads (NumPy releases the GIL): the machine's
    memory bandwidth as the compiled updates, which use every core, see it."""
    threads = os.cpu_count() or 1
    a = np.ones(64 * 2**20, "float32")
    b = np.empty_like(a)
    parts = np.array_split(np.arange(a.size), threads)
    slices = [slice(int(p[0]), int(p[-1]) + 1) for p in parts]
    times = []
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        for _ in range(7):
            start = time.perf_counter()
            list(pool.map(lambda s: np.copyto(b[s], a[s]), slices))
            times.append(time.perf_counter() - start)
    return 2 * a.nbytes / statistics.median(times)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--jit", action="store_true")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--instances", type=int, default=2)
    parser.add_argument("--variables", choices=("matrices", "mlp", "tiny"), default="matrices")
    parser.add_argument("--kinds", default="plain,groups_1,groups_13,per_variable",
                        help=f"comma-separated, among {', '.join(KINDS)}")
    add_clock_arguments(parser)
    args = parser.parse_args()
    kinds = args.kinds.split(",")
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or "plain" not in kinds:
        parser.error(f"--kinds must include plain and be among {KINDS}. Received: {args.kinds}")
    threads = set_threads(args.threads)
    rng = np.random.default_rng(1)
    grads_np = [rng.normal(size=shape).astype("float32") for shape in shapes(args.variables)]
    first = {}

    def make_run(kind):
        variables = make_variables(args.variables)
        grads = [keras.ops.convert_to_tensor(g) for g in grads_np]
        run = compiled_apply(
            make_optimizer(kind, variables), variables, grads, args.jit,
            bare=int(kind.split("_")[1]) if kind.startswith("keras_") else None,
        )
        start = time.perf_counter()
        run()
        first[kind] = time.perf_counter() - start

        def calls():
            for _ in range(args.calls):
                run()

        return calls

    med, spread = instance_times(
        make_run, kinds, args.instances, args.repeats, per_run=args.calls, clock=args.clock
    )
    aa = {k: spread[k][1] / spread[k][0] for k in kinds}
    params = sum(int(np.prod(shape)) for shape in shapes(args.variables))
    moved = 28 * params
    bandwidth = copy_bandwidth()
    print(f"backend={keras.backend.backend()} jit={args.jit} variables={args.variables} params={params} "
          f"repeats={args.repeats}x{args.calls} instances={args.instances} clock={args.clock} "
          f"threads={threads} "
          f"copy_bandwidth={bandwidth / 1e9:.1f} GB/s ({os.cpu_count()} threads)")
    for kind in kinds:
        print(f"  {kind:<10} median apply {med[kind] * 1e3:8.3f} ms  ratio {med[kind] / med['plain']:.3f}  "
              f"A/A {aa[kind]:.3f}  first call {first[kind]:.2f} s  "
              f"{moved / med[kind] / 1e9:.1f} GB/s ({moved / med[kind] / bandwidth:.2f} of copy)")
    if {"groups_1", "groups_13", "keras_1", "keras_13"} <= set(kinds):
        keras_part = (med["keras_13"] - med["keras_1"]) / 12
        wrapper_part = (med["groups_13"] - med["groups_1"]) / 12 - keras_part
        print(f"  one more group: {keras_part * 1e6:.1f} us Keras' own call (keras_13 - keras_1) / 12, "
              f"{wrapper_part * 1e6:.1f} us the wrapper's (groups_13 - groups_1) / 12 - Keras'")


if __name__ == "__main__":
    main()
