"""Building an optimizer with many rules: construction and `build` time.

A hostile trial found the build quadratic in the number of rules (20,000
rules: 12-45 s). This times `LayerwiseOptimizer(...)` and `build` for
`--rules` rules over a small MLP (3 `Dense` layers, 6 variables), each rule
a regular expression on one layer's variables, in two kinds:

- `scale`: every rule sets a constant `lr_scale` (an entry of the
  optimizer's one `lr_scales` vector variable);
- `decay`: every rule sets `weight_decay` only (no variable of its own).

Usage:
    KERAS_BACKEND=jax python benchmarks/many_rules.py [--rules 20000]
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402

import layerwise as lw  # noqa: E402

LAYERS = 3


def build_model():
    inputs = keras.Input((8,))
    x = inputs
    for i in range(LAYERS):
        x = keras.layers.Dense(8, name=f"dense_{i}")(x)
    return keras.Model(inputs, x)


def make_rules(kind, count):
    setting = {"lr_scale": 0.5} if kind == "scale" else {"weight_decay": 0.01}
    return [lw.Rule(f"dense_{i % LAYERS}/.*", name=f"r{i}", **setting) for i in range(count)]


def time_build(kind, count, clock):
    """Seconds for the constructor and for `build`."""
    model = build_model()
    rules = make_rules(kind, count)
    start = clock()
    optimizer = lw.LayerwiseOptimizer(keras.optimizers.AdamW(1e-3), rules)
    constructed = clock()
    optimizer.build(model.trainable_variables)
    built = clock()
    return constructed - start, built - constructed


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rules", type=int, default=20_000)
    parser.add_argument("--kinds", default="decay,scale")
    parser.add_argument(
        "--clock", choices=("wall", "cpu"), default="cpu",
        help="the process's CPU time (default: other processes on a shared "
        "host disturb it less) or wall time",
    )
    args = parser.parse_args()
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    print(f"backend={keras.backend.backend()} rules={args.rules} clock={args.clock}")
    for kind in args.kinds.split(","):
        construct, build = time_build(kind, args.rules, clock)
        print(
            f"{kind:>6}: constructor {construct:7.2f} s, build {build:7.2f} s, "
            f"total {construct + build:7.2f} s "
            f"({(construct + build) / args.rules * 1e6:.0f} us per rule)"
        )


if __name__ == "__main__":
    main()
