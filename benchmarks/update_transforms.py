"""Step cost of each update transform and projection vs none, and on JAX
the same math as an optax chain, side by side in one process.

Every configuration is `LayerwiseOptimizer(Adam(1e-3))` (no decay, so the
optax chains compute the same updates) with one rule over all variables:

- `none`: no rule (the baseline; its two instances are the A/A control);
- `trust_ratio`, `cautious`, `clip_update`, `block_rms`, `skip_large`,
  `rgn`: `Rule(".*", update=[...])` with that transform;
- `max_norm`, `unit_norm`: `Rule(".*", project=[...])`;
- JAX, `--mode apply` only: `optax_none` (`optax.adam`),
  `optax_trust_ratio` (`chain(scale_by_adam, scale_by_trust_ratio,
  scale(-lr))`, i.e. `optax.lamb` without decay) and `optax_block_rms`
  (`chain(adam, clip_by_block_rms)`), jitted with donated state.

`--mode fit`: median step of `fit` on `fit_overhead.py`'s residual MLP
(`--width`, default 128). `--mode apply`: the optimizer's apply alone on
the MLP's 50 variables (798k parameters), compiled as `fit` runs it
(`apply_only.compiled_apply`). `--mode memory` (JAX): the compiled apply's
temporary bytes per configuration (XLA's memory analysis), against the
parameter bytes: the one transient copy the contract allows.

Usage:
    KERAS_BACKEND=jax python benchmarks/update_transforms.py --mode apply --repeats 5 --calls 10
    KERAS_BACKEND=tensorflow python benchmarks/update_transforms.py --mode fit --repeats 5 --steps 20
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import layerwise as lw  # noqa: E402
from apply_only import compiled_apply, make_variables, shapes  # noqa: E402
from common import epoch_seconds, instance_times  # noqa: E402
from fit_overhead import build_model  # noqa: E402

LR = 1e-3
TRANSFORMS = {
    "trust_ratio": lambda: {"update": [lw.trust_ratio()]},
    "cautious": lambda: {"update": [lw.cautious()]},
    "clip_update": lambda: {"update": [lw.clip_update(1e-3)]},
    "block_rms": lambda: {"update": [lw.clip_update_block_rms(1e-4)]},
    "skip_large": lambda: {"update": [lw.skip_large_updates(10.0)]},
    "rgn": lambda: {"update": [lw.relative_gradient_norm()]},
    "max_norm": lambda: {"project": [lw.max_norm(1.0)]},
    "unit_norm": lambda: {"project": [lw.unit_norm()]},
}
OPTAX = ("optax_none", "optax_trust_ratio", "optax_block_rms")


def make_optimizer(kind):
    inner = keras.optimizers.Adam(LR)
    if kind == "none":
        return lw.LayerwiseOptimizer(inner)
    return lw.LayerwiseOptimizer(inner, [lw.Rule(".*", **TRANSFORMS[kind]())])


def optax_apply(kind, variables, grads):
    """The optax chain of the same math, jitted with donated state."""
    import jax
    import optax

    chains = {
        "optax_none": optax.adam(LR),
        "optax_trust_ratio": optax.chain(
            optax.scale_by_adam(), optax.scale_by_trust_ratio(), optax.scale(-LR)
        ),
        "optax_block_rms": optax.chain(optax.adam(LR), optax.clip_by_block_rms(1e-4)),
    }
    tx = chains[kind]
    params = [jax.numpy.array(keras.ops.convert_to_numpy(v)) for v in variables]
    state = {"params": params, "opt": tx.init(params)}

    def _step(params, opt, grads):
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt

    step = jax.jit(_step, donate_argnums=(0, 1))

    def run():
        state["params"], state["opt"] = step(state["params"], state["opt"], grads)
        jax.block_until_ready(state["params"])

    return run


def fit_runs(args, kinds):
    rng = np.random.default_rng(0)
    n = args.steps * args.batch_size
    x = rng.normal(size=(n, args.width)).astype("float32")
    y = rng.integers(0, 10, size=(n,)).astype("int32")
    first = {}

    def make_run(kind):
        model = build_model(seed=0, width=args.width)
        model.compile(
            make_optimizer(kind),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=args.jit,
        )
        first[kind] = epoch_seconds(model, x, y, args.batch_size)
        return lambda: epoch_seconds(model, x, y, args.batch_size)

    return make_run, first, args.steps


def apply_runs(args, kinds):
    rng = np.random.default_rng(1)
    grads_np = [rng.normal(size=s).astype("float32") for s in shapes("mlp")]
    first = {}

    def make_run(kind):
        variables = make_variables("mlp")
        grads = [keras.ops.convert_to_tensor(g) for g in grads_np]
        if kind in OPTAX:
            run = optax_apply(kind, variables, grads)
        else:
            run = compiled_apply(make_optimizer(kind), variables, grads, args.jit)
        start = time.perf_counter()
        run()
        first[kind] = time.perf_counter() - start

        def calls():
            for _ in range(args.calls):
                run()

        return calls

    return make_run, first, args.calls


def memory(kinds):
    """JAX: temporary bytes of the compiled, donated apply."""
    from apply_only import jitted_apply

    params = sum(int(np.prod(s)) for s in shapes("mlp"))
    print(f"backend=jax mode=memory params={params} ({4 * params / 1e6:.2f} MB float32)")
    for kind in kinds:
        variables = make_variables("mlp")
        optimizer = make_optimizer(kind)
        optimizer.build(variables)
        grads = [keras.ops.zeros(s) for s in shapes("mlp")]
        compiled = jitted_apply(optimizer).lower(
            [v.value for v in variables], [v.value for v in optimizer.variables], grads
        ).compile()
        temp = compiled.memory_analysis().temp_size_in_bytes
        print(f"  {kind:<12} temp {temp / 1e6:8.3f} MB  ({temp / (4 * params):.2f} x parameters)")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=("fit", "apply", "memory"), default="apply")
    parser.add_argument("--jit", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--instances", type=int, default=2)
    parser.add_argument("--kinds", default=None, help="comma-separated; default: all")
    args = parser.parse_args()
    backend = keras.backend.backend()
    kinds = ["none"] + list(TRANSFORMS)
    if backend == "jax" and args.mode == "apply":
        kinds += list(OPTAX)
    if args.kinds:
        kinds = args.kinds.split(",")
    if args.mode == "memory":
        memory([k for k in kinds if k not in OPTAX])
        return
    make_run, first, per_run = (fit_runs if args.mode == "fit" else apply_runs)(args, kinds)
    med, spread = instance_times(make_run, kinds, args.instances, args.repeats, per_run=per_run)
    print(
        f"backend={backend} mode={args.mode} jit={args.jit} repeats={args.repeats} "
        f"instances={args.instances} per_run={per_run} "
        f"{'width=' + str(args.width) + ' batch=' + str(args.batch_size) if args.mode == 'fit' else 'variables=mlp (798k)'}"
        " (best instance; A/A = slowest/fastest instance)"
    )
    base = med["none"] if "none" in med else None
    for kind in kinds:
        ratio = f"  ratio/none {med[kind] / base:.3f}" if base else ""
        print(
            f"  {kind:<18} median {med[kind] * 1e3:8.3f} ms{ratio}  "
            f"A/A {spread[kind][1] / spread[kind][0]:.3f}  first {first[kind]:.2f} s"
        )
    if backend == "jax" and {"optax_trust_ratio", "trust_ratio"} <= set(med):
        print(f"  trust_ratio / optax_trust_ratio: {med['trust_ratio'] / med['optax_trust_ratio']:.3f}; "
              f"none / optax_none: {med['none'] / med['optax_none']:.3f}; "
              f"block_rms / optax_block_rms: {med['block_rms'] / med['optax_block_rms']:.3f}")


if __name__ == "__main__":
    main()
