"""Many groups: ~1,000 variables, up to one update group per variable.

Real fine-tuning configurations can have one parameter group per tensor
(a user reported 465 groups in PyTorch). Model: `--blocks` (default 250)
small blocks, each `LayerNormalization(Dense(width)(x))` (kernel, bias,
gamma, beta: 4 variables a block, 1,000 with a 10-unit head's 2 more:
1,002; width 32, 281k parameters), in `--depth` (default 25) residual rows
of `blocks / depth` side by side: `x = x + sum(blocks of the row)`;
AdamW(1e-3, weight_decay=0.01). Depth, not the number of variables, is
what makes XLA's CPU compile slow (a plain 50-deep stack compiles in 80 s,
a 250-deep one not in 10 minutes; 25 x 10 in ~40 s and 1.9 GB), and a
residual inside each block, `LayerNormalization(x + Dense(x))`, made the
25 x 10 compile exceed 20 GB. `--depth 0` gives the one-wide stack. Configurations:

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
- `--mode hlo` (JAX): the compiled apply's program, counted (parameters,
  fusions, copies) at the same group counts: what one more group adds to
  the program, free of timing noise. Also `one_call_rates`: the remedy the
  issue names, prototyped here (not a library feature): plain AdamW making
  one update call in which the learning rate is a per-variable scalar (a
  vector of 1,002 rates, one element per variable), to count what that
  design compiles to against one group per tensor.

Usage:
    KERAS_BACKEND=jax python benchmarks/many_groups.py --jit [--repeats 5]
    KERAS_BACKEND=tensorflow python benchmarks/many_groups.py --mode apply [--jit]
    KERAS_BACKEND=jax python benchmarks/many_groups.py --mode hlo
"""

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(__file__))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import layerwise as lw  # noqa: E402
from apply_only import compiled_apply, jitted_apply  # noqa: E402
from common import (  # noqa: E402
    classification_data, epoch_seconds, fit_arguments, instance_times, state_bytes,
)

GROUP_COUNTS = (1, 11, 51, 201)


def build_model(blocks, width, depth=None, seed=0):
    depth = depth or blocks
    if blocks % depth:
        raise ValueError(f"`blocks` must be a multiple of `depth`. Received: blocks={blocks}, depth={depth}")
    side = blocks // depth
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((width,))
    x = inputs
    for row in range(depth):
        outs = [
            keras.layers.LayerNormalization(name=f"block_{i}_norm")(
                keras.layers.Dense(width, activation="gelu", name=f"block_{i}_dense")(x)
            )
            for i in range(row * side, (row + 1) * side)
        ]
        x = x + (outs[0] if side == 1 else keras.layers.Add(name=f"row_{row}")(outs))
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


class OneCallRates(keras.optimizers.AdamW):
    """`one_call_rates`: AdamW whose single update call decays and updates
    variable `i` at `learning_rate * rates[i]`, the rates an optimizer
    variable (so they can change without retracing, as multipliers do)."""

    def __init__(self, rates, **kwargs):
        super().__init__(**kwargs)
        self._initial_rates = np.asarray(rates, "float32")

    def build(self, variables):
        super().build(variables)
        rates = self._initial_rates
        self._rates = self.add_variable(
            shape=rates.shape, initializer=lambda shape, dtype: keras.ops.convert_to_tensor(rates),
            name="rates",
        )

    def _apply_weight_decay(self, variables):
        pass  # in the update call below, at each variable's own rate

    def _backend_update_step(self, grads, variables, learning_rate):
        for i, (grad, variable) in enumerate(zip(grads, variables)):
            rate = learning_rate * self._rates[i]
            variable.assign(variable - variable * self.weight_decay * rate)
            self.update_step(grad, variable, rate)


def count_update_traces(optimizer):
    """Counts the Python runs of the grouped update: on JAX and TensorFlow
    one per trace, so the count after warm-up says whether `fit` retraced."""
    counter = {"runs": 0}
    if isinstance(optimizer, lw.LayerwiseOptimizer):
        stage = optimizer.pipeline["grouped_update"]
        run = stage.run

        def counted(*args, **kwargs):
            counter["runs"] += 1
            return run(*args, **kwargs)

        stage.run = counted
    return counter


def fit_kinds(args):
    kinds = ("plain", f"groups_{min(201, args.blocks + 1)}", "per_variable")
    if not args.kinds:
        return kinds
    wanted = tuple(args.kinds.split(","))
    unknown = [k for k in wanted if k not in kinds]
    if unknown:
        raise ValueError(f"`--kinds` must name some of {kinds}. Received: kinds={args.kinds!r}")
    return wanted


def fit_mode(args):
    kinds = fit_kinds(args)
    x, y = classification_data(args.steps, args.batch_size, args.width)
    first, built, counters = {}, {}, {}

    def make_run(kind):
        model = build_model(args.blocks, args.width, args.depth)
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
    variables = next(iter(built.values())).trainable_variables
    # Plain's state, built (not compiled) on the same variables: a process
    # timing one configuration still checks its state.
    reference = make_optimizer("plain", variables)
    reference.build(variables)
    plain_bytes = state_bytes(reference)
    params = sum(int(np.prod(v.shape)) for v in variables)
    print(f"backend={keras.backend.backend()} jit_compile={args.jit} mode=fit blocks={args.blocks} "
          f"depth={args.depth or args.blocks} width={args.width} variables={len(variables)} "
          f"params={params} steps={args.steps} batch={args.batch_size} repeats={args.repeats} "
          f"instances={args.instances} (best instance; A/A = slowest/fastest instance)")
    for kind in kinds:
        optimizer = built[kind].optimizer
        ratio = f"ratio {med[kind] / med['plain']:.3f}" if "plain" in med else "ratio -"
        line = (f"  {kind:<13} median step {med[kind] * 1e3:8.3f} ms  {ratio}  "
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
    shapes = [tuple(v.shape) for v in build_model(args.blocks, args.width, args.depth).trainable_variables]
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


def hlo_mode(args):
    """JAX: the optimized program of the jitted apply (`apply_only.jitted_apply`),
    counted."""
    if keras.backend.backend() != "jax":
        raise ValueError(f"`--mode hlo` is for the jax backend. Received: {keras.backend.backend()}")
    counts = [c for c in GROUP_COUNTS if c <= args.blocks + 1]
    kinds = ["plain"] + [f"groups_{c}" for c in counts] + ["per_variable", "one_call_rates"]
    shapes = [tuple(v.shape) for v in build_model(args.blocks, args.width, args.depth).trainable_variables]
    print(f"backend=jax mode=hlo variables={len(shapes)} (entry computation of the optimized HLO)")
    for kind in kinds:
        variables = [keras.Variable(np.zeros(s, "float32"), name=f"w{i}") for i, s in enumerate(shapes)]
        if kind == "one_call_rates":
            rates = [0.999 ** (i + 1) for i in range(len(variables))]  # per_variable's
            optimizer = OneCallRates(rates, learning_rate=1e-3, weight_decay=0.01)
        else:
            optimizer = make_optimizer(kind, variables)
        optimizer.build(variables)
        text = jitted_apply(optimizer).lower(
            [v.value for v in variables], [v.value for v in optimizer.variables],
            [keras.ops.ones(s) for s in shapes],
        ).compile().as_text()
        entry = text.split("\nENTRY ", 1)[1].splitlines()
        groups = len(optimizer.plan.groups) if isinstance(optimizer, lw.LayerwiseOptimizer) else 0
        print(f"  {kind:<14} groups {groups:>5}  optimizer variables {len(optimizer.variables):>5}  "
              f"parameters {sum(' parameter(' in line for line in entry):>5}  "
              f"fusions {sum(' fusion(' in line for line in entry):>5}  "
              f"copies {sum(' copy(' in line for line in entry):>3}")


def main():
    parser = fit_arguments(repeats=5, steps=20, batch_size=32)
    parser.add_argument("--mode", choices=("fit", "apply", "hlo"), default="fit")
    parser.add_argument("--blocks", type=int, default=250)
    parser.add_argument("--depth", type=int, default=25,
                        help="rows of blocks, blocks / depth side by side (0: one-wide stack)")
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--kinds", default=None,
                        help="fit mode: comma-separated configurations to time (default: all "
                        "three); one a process keeps one compiled step in memory (a 1,002-"
                        "variable XLA CPU step holds ~6 GB, see RESULTS.md)")
    args = parser.parse_args()
    {"fit": fit_mode, "apply": apply_mode, "hlo": hlo_mode}[args.mode](args)


if __name__ == "__main__":
    main()
