"""Many groups: ~1,000 variables, up to one update group per variable.

Real fine-tuning configurations can have one parameter group per tensor
(a user reported 465 groups in PyTorch). Model: a deep stack of `--blocks`
(default 250) small blocks, each `Dense(width) -> LayerNormalization` with
a residual (kernel, bias, gamma, beta: 4 variables a block, 1,000 with a
10-unit head's 2 more: 1,002; width 32, 281k parameters), AdamW(1e-3,
weight_decay=0.01). Configurations:

- `plain`: AdamW alone;
- `groups_1`: `LayerwiseOptimizer(AdamW)` without rules (one group);
- `groups_<n>`: one rule per block for the first `n - 1` blocks at
  `lr_scale = 0.99**(k + 1)` (the rest unmatched): `n` update groups and
  `n - 1` distinct multipliers (`groups_201`: the issue's ~200);
- `per_variable`: one rule per variable, each its own multiplier: one
  group per tensor (1,002 groups).

Two measurements:

- `--mode fit` (default): the `fit` step of `plain`, `groups_201` (or
  one group per block with fewer blocks) and `per_variable`, compiled as `--jit` says, in alternating repeats with
  A/A instances (see `common.instance_times`); also the first epoch
  (trace/compile), how many times the update was traced in the timed
  epochs (0: one trace, at the warm-up), and the optimizer state against
  plain's (it must be plain's slots plus one float32 multiplier a rule).
- `--mode apply`: the optimizer apply alone (as `apply_only.py` compiles
  it) at 1, 11, 51, 201 groups and one per variable; the fixed cost of one
  more group is the least-squares slope of the median apply time over the
  number of groups.

Usage:
    KERAS_BACKEND=jax python benchmarks/many_groups.py --jit [--repeats 5]
    KERAS_BACKEND=tensorflow python benchmarks/many_groups.py --mode apply [--jit]
"""

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(__file__))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import layerwise as lw  # noqa: E402
from apply_only import compiled_apply  # noqa: E402
from common import (  # noqa: E402
    classification_data, epoch_seconds, fit_arguments, instance_times, state_bytes,
)

GROUP_COUNTS = (1, 11, 51, 201)


def build_model(blocks, width, seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((width,))
    x = inputs
    for i in range(blocks):
        h = keras.layers.Dense(width, activation="gelu", name=f"block_{i}_dense")(x)
        x = keras.layers.LayerNormalization(name=f"block_{i}_norm")(x + h)
    outputs = keras.layers.Dense(10, name="head")(x)
    return keras.Model(inputs, outputs)


def rules_for(kind, variables):
    """The rules of a configuration over `variables` (4 per block, in
    block order, then the head's 2)."""
    if kind == "groups_1":
        return []
    if kind == "per_variable":
        return [lw.Rule(v, lr_scale=0.999 ** (i + 1), name=f"v{i}") for i, v in enumerate(variables)]
    n = int(kind.split("_")[1])
    return [
        lw.Rule(variables[4 * k: 4 * k + 4], lr_scale=0.99 ** (k + 1), name=f"block_{k}")
        for k in range(n - 1)
    ]


def make_optimizer(kind, variables):
    inner = keras.optimizers.AdamW(1e-3, weight_decay=0.01)
    if kind == "plain":
        return inner
    return lw.LayerwiseOptimizer(inner, rules_for(kind, variables))


def count_update_traces(optimizer):
    """Counts the Python runs of the grouped update: on JAX and TensorFlow
    one per trace, so the count after warm-up says whether `fit` retraced."""
    counter = {"runs": 0}
    if isinstance(optimizer, lw.LayerwiseOptimizer):
        updates = optimizer._updates
        apply = updates.apply

        def counted(*args, **kwargs):
            counter["runs"] += 1
            return apply(*args, **kwargs)

        updates.apply = counted
    return counter


def fit_mode(args):
    kinds = ("plain", f"groups_{min(201, args.blocks + 1)}", "per_variable")
    x, y = classification_data(args.steps, args.batch_size, args.width)
    first, built, counters = {}, {}, {}

    def make_run(kind):
        model = build_model(args.blocks, args.width)
        optimizer = make_optimizer(kind, model.trainable_variables)
        counters.setdefault(kind, []).append(count_update_traces(optimizer))
        model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      jit_compile=args.jit)
        built[kind] = model
        first[kind] = epoch_seconds(model, x, y, args.batch_size)  # warm-up: trace / compile
        runs_after_warm_up = counters[kind][-1]["runs"]
        counters[kind][-1]["warm_up"] = runs_after_warm_up
        return lambda: epoch_seconds(model, x, y, args.batch_size)

    med, spread = instance_times(make_run, kinds, args.instances, args.repeats, per_run=args.steps)
    plain_bytes = state_bytes(built["plain"].optimizer)
    params = sum(int(np.prod(v.shape)) for v in built["plain"].trainable_variables)
    print(f"backend={keras.backend.backend()} jit_compile={args.jit} mode=fit blocks={args.blocks} "
          f"width={args.width} variables={len(built['plain'].trainable_variables)} params={params} "
          f"steps={args.steps} batch={args.batch_size} repeats={args.repeats} "
          f"instances={args.instances} (best instance; A/A = slowest/fastest instance)")
    for kind in kinds:
        optimizer = built[kind].optimizer
        line = (f"  {kind:<13} median step {med[kind] * 1e3:8.3f} ms  ratio {med[kind] / med['plain']:.3f}  "
                f"(A/A {spread[kind][1] / spread[kind][0]:.3f}); first epoch {first[kind]:.2f} s")
        if isinstance(optimizer, lw.LayerwiseOptimizer):
            n_rules = len(optimizer.rules)
            extra = state_bytes(optimizer) - plain_bytes
            traced = [c["runs"] - c["warm_up"] for c in counters[kind]]
            warm = [c["warm_up"] for c in counters[kind]]
            line += (f"; groups {len(optimizer.plan.groups)}; state - plain = {extra} bytes "
                     f"({'exact' if extra == 4 * n_rules else 'NOT exact'}: {n_rules} float32 "
                     f"multipliers); update runs at warm-up {warm}, after {traced}")
        print(line)


def apply_mode(args):
    counts = [c for c in GROUP_COUNTS if c <= args.blocks + 1]
    kinds = ["plain"] + [f"groups_{c}" for c in counts] + ["per_variable"]
    shapes = [tuple(v.shape) for v in build_model(args.blocks, args.width).trainable_variables]
    rng = np.random.default_rng(1)
    grads_np = [rng.normal(size=s).astype("float32") for s in shapes]
    first, groups = {}, {}

    def make_run(kind):
        variables = [
            keras.Variable(rng.normal(size=s).astype("float32") * 0.05, name=f"w{i}")
            for i, s in enumerate(shapes)
        ]
        grads = [keras.ops.convert_to_tensor(g) for g in grads_np]
        optimizer = make_optimizer(kind, variables)
        run = compiled_apply(optimizer, variables, grads, args.jit)
        groups[kind] = len(optimizer.plan.groups) if kind != "plain" else 0
        start = time.perf_counter()
        run()
        first[kind] = time.perf_counter() - start

        def calls():
            for _ in range(args.calls):
                run()

        return calls

    med, spread = instance_times(make_run, kinds, args.instances, args.repeats, per_run=args.calls)
    print(f"backend={keras.backend.backend()} jit={args.jit} mode=apply variables={len(shapes)} "
          f"params={sum(int(np.prod(s)) for s in shapes)} repeats={args.repeats}x{args.calls} "
          f"instances={args.instances}")
    for kind in kinds:
        print(f"  {kind:<13} groups {groups[kind]:>5}  median apply {med[kind] * 1e3:9.3f} ms  "
              f"ratio {med[kind] / med['plain']:.3f}  A/A {spread[kind][1] / spread[kind][0]:.3f}  "
              f"first call {first[kind]:.2f} s")
    n = np.array([groups[k] for k in kinds[1:]], dtype=float)
    t = np.array([med[k] for k in kinds[1:]])
    slope, intercept = np.polyfit(n, t, 1)
    print(f"  fixed cost per group (least-squares slope over {len(n)} points): {slope * 1e6:.2f} us; "
          f"intercept {intercept * 1e3:.3f} ms (plain {med['plain'] * 1e3:.3f} ms)")


def main():
    parser = fit_arguments(repeats=5, steps=20, batch_size=32)
    parser.add_argument("--mode", choices=("fit", "apply"), default="fit")
    parser.add_argument("--blocks", type=int, default=250)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--calls", type=int, default=5)
    args = parser.parse_args()
    if args.mode == "fit":
        fit_mode(args)
    else:
        apply_mode(args)


if __name__ == "__main__":
    main()
