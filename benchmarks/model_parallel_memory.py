"""Optimizer state per device under `keras.distribution.ModelParallel` (JAX,
eight host CPU devices, a 2 x 4 "batch" x "model" mesh): the plain
optimizer next to `LayerwiseOptimizer` with the rules of
`tests/scripts/model_parallel_equivalence.py`, on that script's transformer
(here wider, `--width`, `--hidden`, `--vocab`).

Per device: the bytes of the optimizer variables' shards on device 0 (what
that device holds), and, where JAX offers it, the compiled train step's
`memory_analysis()` (arguments, outputs, temporaries of one device's
program). Usage:

    KERAS_BACKEND=jax python benchmarks/model_parallel_memory.py
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

# Sets the eight host devices before JAX starts.
from tests.scripts import model_parallel_equivalence as mp  # noqa: E402

import jax  # noqa: E402
import keras  # noqa: E402

CONFIGURATIONS = ("plain", "plain_frozen", "plain_accumulate_ema", "layerwise_rules",
                  "layerwise_rules_accumulate_ema")


def make_optimizer(kind, model):
    if kind in ("plain", "plain_frozen"):
        return keras.optimizers.AdamW(0.01, weight_decay=0.05)
    if kind == "plain_accumulate_ema":
        return mp.plain_optimizer()
    return mp.layerwise_optimizer(model, options=kind == "layerwise_rules_accumulate_ema")


def device_bytes(variables, device):
    """Bytes of the shards of `variables` that live on `device`."""
    return sum(
        shard.data.nbytes
        for v in variables
        for shard in v.value.addressable_shards
        if shard.device == device
    )


def measure(kind, distribution, sizes, compile_step):
    keras.distribution.set_distribution(distribution)
    try:
        model = mp.transformer(**sizes)
        if kind in ("plain_frozen", "plain_accumulate_ema"):
            model.get_layer("block_0").trainable = False  # as the rules freeze it
        model.compile(make_optimizer(kind, model),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      jit_compile=True)
        model.optimizer.build(model.trainable_variables)
        device = jax.devices()[0]
        optimizer_variables = model.optimizer.variables
        total = sum(int(v.value.nbytes) for v in optimizer_variables)
        row = {
            "kind": kind,
            "state_total": total,
            "state_device0": device_bytes(optimizer_variables, device) if distribution else total,
            "weights_device0": (device_bytes(model.weights, device) if distribution
                                else sum(int(w.value.nbytes) for w in model.weights)),
        }
        if compile_step and distribution is not None:
            analysis = mp.compiled_step(model, distribution).memory_analysis()
            if analysis is not None:
                row.update(
                    argument=analysis.argument_size_in_bytes,
                    output=analysis.output_size_in_bytes,
                    temp=analysis.temp_size_in_bytes,
                    alias=analysis.alias_size_in_bytes,
                )
        return row
    finally:
        keras.distribution.set_distribution(None)
        keras.backend.clear_session()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args()
    sizes = dict(width=args.width, hidden=args.hidden, vocab=args.vocab, heads=args.heads)
    model = mp.transformer(**sizes)
    print(f"model: {model.count_params():,} parameters, "
          f"{sum(int(w.value.nbytes) for w in model.weights):,} bytes; "
          f"mesh {mp.MESH_SHAPE} (batch, model)")
    keras.backend.clear_session()
    print("| configuration | state, one device | state on device 0 (of 8) "
          "| weights on device 0 | step arguments | step outputs | step temporaries |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for kind in CONFIGURATIONS:
        single = measure(kind, None, sizes, compile_step=False)
        row = measure(kind, mp.model_parallel(), sizes, compile_step=not args.no_compile)
        # The whole state is the same with and without the mesh.
        assert single["state_total"] == row["state_total"], (single, row)
        cells = [kind, f"{single['state_total']:,}", f"{row['state_device0']:,}",
                 f"{row['weights_device0']:,}"]
        cells += [f"{row[k]:,}" if k in row else "-" for k in ("argument", "output", "temp")]
        print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
