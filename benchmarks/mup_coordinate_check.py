"""μP coordinate check: how far hidden activations move, across widths.

MLPs `16 -> width -> width -> width -> 4` (ReLU), widths 64 ... 512, each
trained for 10 steps of Adam(1e-4) (mean squared error, batches of 64
Gaussian inputs, a fresh batch per step, targets from a fixed linear
teacher `y = x @ T`), with and without `layerwise.mup(model, base_model)`
(base width 64). For each hidden layer the script prints the RMS over
coordinates of the change of its activations on a fixed probe batch,
`sqrt(mean((h_10 - h_0) ** 2))`, and the max/min ratio of it over the
widths: about 1 means width-independent (μP's "coordinate check", as in
`mup.coord_check`); a ratio that grows with the width means updates that
blow up with width.

Initialization: Keras' `he_normal` kernels (variance `2 / fan_in`, μP's
initialization of the input and hidden layers up to a constant) and zero
biases, in every layer; no output multiplier (see `layerwise.mup`'s
docstring for what else μP changes). Keras' default `glorot_uniform`
(variance `2 / (fan_in + fan_out)`) shrinks the input layer's activations
like `1 / sqrt(width)`, which is not μP's initialization: pass
`--init glorot_uniform` to see it. The learning rate keeps the widest
model in the regime where the change is still proportional to the update
(at 1e-3 the widest Adam runs saturate within 10 steps). Each width starts
from its own seeded initialization, the same with and without `mup`.

Usage:
    KERAS_BACKEND=jax python benchmarks/mup_coordinate_check.py [--steps 10]
        [--widths 64 128 256 512] [--learning-rate 0.003]
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import layerwise as lw  # noqa: E402
from layerwise.recipes.mup import mup  # noqa: E402

INPUTS, OUTPUTS, HIDDEN, BATCH, BASE_WIDTH = 16, 4, 3, 64, 64
INIT, LEARNING_RATE = "he_normal", 1e-4


def mlp(width, init=INIT, seed=0):
    """The MLP at `width`, with its hidden layers as a second model."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((INPUTS,))
    hidden, x = [], inputs
    for _ in range(HIDDEN):
        x = keras.layers.Dense(width, activation="relu", kernel_initializer=init)(x)
        hidden.append(x)
    outputs = keras.layers.Dense(OUTPUTS, kernel_initializer=init)(x)
    return keras.Model(inputs, outputs), keras.Model(inputs, hidden)


def batches(steps, seed=0):
    """A fixed probe batch, then `steps` training batches."""
    rng = np.random.default_rng(seed)
    teacher = rng.normal(size=(INPUTS, OUTPUTS)) / np.sqrt(INPUTS)
    probe = rng.normal(size=(BATCH, INPUTS)).astype("float32")
    train = []
    for _ in range(steps):
        x = rng.normal(size=(BATCH, INPUTS))
        train.append((x.astype("float32"), (x @ teacher).astype("float32")))
    return probe, train


def activation_change(width, steps, with_mup, learning_rate=LEARNING_RATE,
                      init=INIT, seed=0):
    """RMS change of each hidden layer's activations after `steps` steps."""
    model, features = mlp(width, init, seed)
    rules = mup(model, mlp(BASE_WIDTH, init, seed + 1)[0]) if with_mup else []
    optimizer = lw.LayerwiseOptimizer(keras.optimizers.Adam(learning_rate), rules)
    # XLA compiles are slow on TensorFlow and buy nothing at this size.
    model.compile(optimizer=optimizer, loss="mse",
                  jit_compile=keras.backend.backend() == "jax")
    probe, train = batches(steps, seed)
    before = [keras.ops.convert_to_numpy(h) for h in features(probe)]
    for x, y in train:
        model.train_on_batch(x, y)
    after = [keras.ops.convert_to_numpy(h) for h in features(probe)]
    return [float(np.sqrt(np.mean((a - b) ** 2))) for a, b in zip(after, before)]


def coordinate_check(widths, steps, with_mup, learning_rate=LEARNING_RATE, init=INIT):
    """`{width: [RMS change per hidden layer]}`."""
    return {
        w: activation_change(w, steps, with_mup, learning_rate, init) for w in widths
    }


def spread(changes, layer):
    """Max/min over widths of one hidden layer's RMS change."""
    values = [per_layer[layer] for per_layer in changes.values()]
    return max(values) / min(values)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--widths", type=int, nargs="+", default=[64, 128, 256, 512])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--learning-rate", type=float, default=LEARNING_RATE)
    parser.add_argument("--init", default=INIT)
    args = parser.parse_args()
    print(f"backend {keras.backend.backend()}, Adam({args.learning_rate}), "
          f"{args.steps} steps, {args.init} kernels, base width {BASE_WIDTH}")
    header = " | ".join(f"hidden {i + 1}" for i in range(HIDDEN))
    print(f"| optimizer | width | {header} |")
    print("| --- | ---: |" + " ---: |" * HIDDEN)
    results = {}
    for with_mup in (False, True):
        name = "Adam + mup" if with_mup else "Adam"
        results[name] = coordinate_check(
            args.widths, args.steps, with_mup, args.learning_rate, args.init)
        for width, values in results[name].items():
            cells = " | ".join(f"{v:.4f}" for v in values)
            print(f"| {name} | {width} | {cells} |")
    for name, changes in results.items():
        ratios = ", ".join(f"{spread(changes, i):.2f}" for i in range(HIDDEN))
        print(f"max/min over widths, {name}: {ratios} (hidden 1..{HIDDEN})")


if __name__ == "__main__":
    main()
