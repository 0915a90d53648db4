"""`fit` step time with per-group optimizers, against Keras' `MultiOptimizer`
with the same mapping, side by side in one process.

Model: the 12-block transformer of `anchors.py` (10.4M parameters). The
hybrid every recent LLM recipe uses: Muon on the hidden matrices (every
`Dense` kernel of the blocks), AdamW (1e-3, decay 0.01) on embeddings,
norms, biases and the head.

Configurations:

1. `muon_alone`: one `keras.optimizers.Muon` routing itself (its AdamW path
   for embeddings, 1-D variables and the head, `exclude_layers=["head"]`):
   the same kinds of update in one optimizer, the floor;
2. `multi_optimizer`: Keras' `MultiOptimizer(Muon, AdamW)` with the mapping
   above;
3. `layerwise`: `LayerwiseOptimizer(AdamW, [Rule(hidden kernels,
   optimizer=Muon)])`, the same mapping;
4. `layerwise_llrd`: the same plus layer-wise decay 0.75 over the 14
   blocks (multipliers on both optimizers' groups: 27 update groups).

Reports the median step over repeats of one epoch each (configurations
alternating, `--instances` copies each, best kept, A/A spread printed), its
ratio to `multi_optimizer`, the first epoch and the optimizer state bytes.

Usage:
    KERAS_BACKEND=jax python benchmarks/group_optimizers.py [--jit]
"""

import os
import re
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(__file__))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import layerwise as lw  # noqa: E402
from anchors import DECAY, T, TRANSFORMER_BLOCKS, VOCAB, transformer  # noqa: E402
from common import fit_arguments, instance_times, state_bytes, warmed_up  # noqa: E402

HIDDEN = r"layer_\d+_(q|k|v|o|fc1|fc2)/kernel"


def _hidden(variable):
    return re.fullmatch(HIDDEN, variable.path) is not None


def muon():
    return keras.optimizers.Muon(0.02, weight_decay=0.01, adam_weight_decay=0.01)


def adamw():
    return keras.optimizers.AdamW(1e-3, weight_decay=0.01)


def make(kind, jit_compile):
    model = transformer()
    if kind == "muon_alone":
        optimizer = keras.optimizers.Muon(
            1e-3, weight_decay=0.01, adam_weight_decay=0.01, exclude_layers=["head"]
        )
    elif kind == "multi_optimizer":
        hidden, rest = muon(), adamw()
        optimizer = keras.optimizers.MultiOptimizer(lambda v: hidden if _hidden(v) else rest)
    else:
        rules = [lw.Rule(HIDDEN, optimizer=muon(), name="muon")]
        if kind == "layerwise_llrd":
            rules = lw.layer_decay(model, DECAY, blocks=TRANSFORMER_BLOCKS) + rules
        optimizer = lw.LayerwiseOptimizer(adamw(), rules)
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=jit_compile)
    return model


def main():
    args = fit_arguments(repeats=5, steps=10, batch_size=8).parse_args()
    rng = np.random.default_rng(0)
    n = args.steps * args.batch_size
    x = rng.integers(0, VOCAB, size=(n, T)).astype("int32")
    y = rng.integers(0, 10, size=(n,)).astype("int32")
    kinds = ["muon_alone", "multi_optimizer", "layerwise", "layerwise_llrd"]
    first, optimizers, failed = {}, {}, {}

    def make_run(kind):
        model = make(kind, args.jit)
        optimizers[kind] = model.optimizer

        def run():
            model.fit(x, y, batch_size=args.batch_size, epochs=1, shuffle=False, verbose=0)

        return warmed_up(kind, run, first, failed)

    med, spread = instance_times(make_run, kinds, args.instances, args.repeats, per_run=args.steps)
    reference = "multi_optimizer" if "multi_optimizer" not in failed else "muon_alone"
    print(f"backend={keras.backend.backend()} jit_compile={args.jit} steps={args.steps} "
          f"batch={args.batch_size} repeats={args.repeats} instances={args.instances} "
          f"(best instance; A/A = slowest/fastest instance; ratio to {reference})")
    for kind in kinds:
        if kind in failed:
            print(f"  {kind:<16} failed: {failed[kind]}")
            continue
        print(f"  {kind:<16} median step {med[kind] * 1e3:9.2f} ms  ratio {med[kind] / med[reference]:.3f}  "
              f"A/A {spread[kind][1] / spread[kind][0]:.3f}  first epoch {first[kind]:6.2f} s  "
              f"state {state_bytes(optimizers[kind]):>10} bytes")


if __name__ == "__main__":
    main()
