"""JAX: which part of per-group learning rates slows the jitted apply.

Variants of the apply of `apply_only.py` (48 matrices 512x384, fixed
gradients), timed alternately:

- `plain_adamw`, `plain_adam`, `plain_sgd`: Keras' optimizers alone;
- `g1_adamw`: LayerwiseOptimizer, no rules (one group);
- `g12_wd_only`: 12 groups differing only in `weight_decay` (all share one
  learning-rate tensor);
- `g13_adamw_var`, `g13_adam_var`: 13 groups with `lr_scale` variables;
- `g13_adam_const`: the multipliers as constant callables (no variable read);
- `g13_adam_same`: 13 groups, every `lr_scale=1.0`;
- `g12_sgd_var`: 12 SGD groups with multipliers.

Usage:
    python benchmarks/jax_groups.py plain_adamw g1_adamw g13_adamw_var ...
"""

import os
import statistics
import sys
import time

os.environ["KERAS_BACKEND"] = "jax"
sys.path.insert(0, os.path.dirname(__file__))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import layerwise as lw  # noqa: E402
from apply_only import N_VARS, SHAPE, compiled_apply, make_variables  # noqa: E402


def _groups(variables, settings):
    return [lw.Rule(variables[4 * k: 4 * k + 4], **settings(k)) for k in range(11)]


def variant(name, variables):
    adamw = lambda: keras.optimizers.AdamW(1e-3, weight_decay=0.01)  # noqa: E731
    scale = lambda k: {"lr_scale": 0.8 ** (k + 1)}  # noqa: E731
    return {
        "plain_adamw": adamw,
        "plain_adam": lambda: keras.optimizers.Adam(1e-3),
        "plain_sgd": lambda: keras.optimizers.SGD(1e-3),
        "g1_adamw": lambda: lw.LayerwiseOptimizer(adamw()),
        "g12_wd_only": lambda: lw.LayerwiseOptimizer(
            adamw(), _groups(variables, lambda k: {"weight_decay": 0.01 * (k + 1)})),
        "g13_adamw_var": lambda: lw.LayerwiseOptimizer(adamw(), _groups(variables, scale)),
        "g13_adam_var": lambda: lw.LayerwiseOptimizer(
            keras.optimizers.Adam(1e-3), _groups(variables, scale)),
        "g13_adam_const": lambda: lw.LayerwiseOptimizer(
            keras.optimizers.Adam(1e-3),
            _groups(variables, lambda k: {"lr_scale": (lambda c: lambda step: c)(0.8 ** (k + 1))})),
        "g13_adam_same": lambda: lw.LayerwiseOptimizer(
            keras.optimizers.Adam(1e-3), _groups(variables, lambda k: {"lr_scale": 1.0})),
        "g12_sgd_var": lambda: lw.LayerwiseOptimizer(
            keras.optimizers.SGD(1e-3), _groups(variables, scale)),
    }[name]()


def main(names):
    rng = np.random.default_rng(1)
    grads_np = [rng.normal(size=SHAPE).astype("float32") for _ in range(N_VARS)]
    runs = {}
    for name in names:
        variables = make_variables()
        grads = [keras.ops.convert_to_tensor(g) for g in grads_np]
        runs[name] = compiled_apply(variant(name, variables), variables, grads, False)
        runs[name]()
    times = {n: [] for n in names}
    for r in range(7):
        for name in names if r % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            for _ in range(5):
                runs[name]()
            times[name].append((time.perf_counter() - start) / 5)
    for name in names:
        print(f"  {name:<16} median apply {statistics.median(times[name]) * 1e3:7.2f} ms")


if __name__ == "__main__":
    main(sys.argv[1:])
