"""JAX: why a jitted apply with 13 groups once ran 1.45x slower than plain.

The cause was the benchmark's donation, not the groups: JAX pairs donated
input buffers with outputs of the same shape and dtype *in order*. An apply
written `(opt_values, train_values) -> (train_values, opt_values)` pairs
each weight's donated buffer with a slot's output, so XLA must copy every
weight and slot to keep the inputs it still reads; how much that costs
depends on how XLA schedules those copies, which differs with the number
of distinct learning-rate tensors (one per group). Returning the state in
the order it is donated, as Keras' JAX trainer does, makes every update in
place: no copies, and the groups cost nothing.

For each variant this prints the number of weight- or slot-sized copies in
the compiled program and the median apply time, for both donation orders
(48 matrices 512x384, 9.4M parameters, AdamW, fixed gradients):

- `plain`: AdamW alone;
- `groups_13`: `LayerwiseOptimizer` with 12 rules of 4 variables at
  `lr_scale` 0.8**k (13 groups);
- `groups_13_same`: the same 13 groups, every `lr_scale=1.0`.

Usage:
    python benchmarks/jax_groups.py [--repeats 7]
"""

import argparse
import os
import statistics
import sys
import time

os.environ["KERAS_BACKEND"] = "jax"
sys.path.insert(0, os.path.dirname(__file__))

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

import layerwise as lw  # noqa: E402
from apply_only import N_VARS, SHAPE, make_variables  # noqa: E402


def optimizer(name, variables):
    inner = keras.optimizers.AdamW(1e-3, weight_decay=0.01)
    if name == "plain":
        return inner
    scale = (lambda k: 0.8 ** (k + 1)) if name == "groups_13" else (lambda k: 1.0)
    return lw.LayerwiseOptimizer(
        inner, [lw.Rule(variables[4 * k: 4 * k + 4], lr_scale=scale(k)) for k in range(12)][:-1]
    )


def compiled(name, in_order):
    """`(run, copies)`: a callable running one donated apply, and the
    number of weight-sized copies in its compiled program."""
    variables = make_variables()
    opt = optimizer(name, variables)
    opt.build(variables)
    rng = np.random.default_rng(1)
    grads = [keras.ops.convert_to_tensor(rng.normal(size=SHAPE).astype("float32"))
             for _ in range(N_VARS)]
    if in_order:
        def step(first, second, g):  # (train, opt) -> (train, opt)
            return opt.stateless_apply(second, g, first)
        state = [[v.value for v in variables], [v.value for v in opt.variables]]
    else:
        def step(first, second, g):  # (opt, train) -> (train, opt)
            return opt.stateless_apply(first, g, second)
        state = [[v.value for v in opt.variables], [v.value for v in variables]]
    fn = jax.jit(step, donate_argnums=(0, 1))
    text = fn.lower(*state, grads).compile().as_text()
    entry = text.split("\nENTRY ", 1)[1]
    shape = f"f32[{SHAPE[0]},{SHAPE[1]}]"
    copies = sum(1 for line in entry.splitlines() if " copy(" in line and shape in line)

    def run():
        train, opt_values = fn(*state, grads)
        state[:] = [train, opt_values] if in_order else [opt_values, train]
        jax.block_until_ready(train)

    run()
    return run, copies


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    keys = [(n, o) for o in (False, True) for n in ("plain", "groups_13", "groups_13_same")]
    runs, copies = {}, {}
    for key in keys:
        runs[key], copies[key] = compiled(*key)
    times = {k: [] for k in keys}
    for r in range(args.repeats):
        for key in keys if r % 2 == 0 else keys[::-1]:
            start = time.perf_counter()
            for _ in range(5):
                runs[key]()
            times[key].append((time.perf_counter() - start) / 5)
    med = {k: statistics.median(v) for k, v in times.items()}
    for key in keys:
        name, in_order = key
        base = med[("plain", in_order)]
        order = "in order (train, opt)" if in_order else "swapped (opt, train)"
        print(f"  donation {order:<22} {name:<15} copies {copies[key]:>3}  "
              f"median apply {med[key] * 1e3:7.2f} ms  ratio to plain {med[key] / base:.3f}")


if __name__ == "__main__":
    main()
