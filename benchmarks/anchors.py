"""`fit` step time of layer-wise learning rates against what users would
otherwise pick, side by side in one process.

Models, built locally: a 12-block transformer encoder (d=256, 4 heads,
MLP 1024, sequence 16, vocabulary 4000: 10.4M parameters; attention written
with `keras.ops` so every projection is a `Dense`) with layer-wise decay 0.75
over 14 blocks (embeddings, 12 layers, head), `clip_by_norm(1.0)` on every
gradient, no decay on biases and norms; and a small CNN (`--model cnn`,
3 conv blocks + head, 4 blocks).

Configurations (AdamW 1e-3, weight decay 0.01):

1. `plain`: the inner optimizer alone with `clipnorm=1.0` and biases/norms
   excluded from decay: the same math without layer-wise rates (the limit);
2. `layerwise`: `LayerwiseOptimizer` with the rules above;
3. `multi_optimizer`: Keras `MultiOptimizer`, one AdamW per block at the
   block's rate (`clipnorm=1.0`, biases/norms excluded from decay);
4. `set_learning_rate`: every `Dense`/`Conv2D` wrapped in
   `lw.SetLearningRate(layer, scale)` (the seed's reparameterization;
   norms and embeddings at the base rate), the plain optimizer;
5. `grad_scaling`: rules that scale gradients instead of learning rates
   (`lw.scale(s)`: wrong for Adam, shown for cost only);
6. `two_tapes` (TensorFlow only): the seed's "two optimizers, gradients
   computed twice" custom loop, two AdamW (body at 0.1x, head at 1x), each
   with its own `GradientTape` over the same loss.

Reports the median step over repeats of one epoch each (configurations
alternating; `--instances` copies of each, the best kept, their spread
printed as the A/A control), its ratio to `plain`, the first epoch
(trace/compile) and the optimizer state bytes.

Usage:
    KERAS_BACKEND=tensorflow python benchmarks/anchors.py [--jit] [--model cnn]
"""

import argparse
import math
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(__file__))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

import layerwise as lw  # noqa: E402
from common import instance_times, state_bytes, warmed_up  # noqa: E402

D, HEADS, MLP, T, VOCAB, LAYERS = 256, 4, 1024, 16, 4000, 12
DECAY = 0.75


def _identity(layer, block):
    return layer


def transformer(wrap=_identity):
    keras.utils.set_random_seed(0)
    tokens = keras.Input((T,), dtype="int32")
    x = keras.layers.Embedding(VOCAB, D, name="embed")(tokens)
    positions = ops.cumsum(ops.ones_like(tokens), axis=1) - 1  # symbolic, per batch
    x = x + keras.layers.Embedding(T, D, name="pos")(positions)
    dh = D // HEADS

    def heads(t):
        return ops.transpose(ops.reshape(t, (-1, T, HEADS, dh)), (0, 2, 1, 3))

    for i in range(LAYERS):
        block = i + 1
        h = keras.layers.LayerNormalization(name=f"layer_{i}_ln1")(x)
        q, k, v = (heads(wrap(keras.layers.Dense(D, name=f"layer_{i}_{n}"), block)(h)) for n in "qkv")
        att = ops.softmax(ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))) / math.sqrt(dh), axis=-1)
        o = ops.reshape(ops.transpose(ops.matmul(att, v), (0, 2, 1, 3)), (-1, T, D))
        x = x + wrap(keras.layers.Dense(D, name=f"layer_{i}_o"), block)(o)
        h = keras.layers.LayerNormalization(name=f"layer_{i}_ln2")(x)
        h = wrap(keras.layers.Dense(MLP, activation="gelu", name=f"layer_{i}_fc1"), block)(h)
        x = x + wrap(keras.layers.Dense(D, name=f"layer_{i}_fc2"), block)(h)
    x = keras.layers.GlobalAveragePooling1D()(keras.layers.LayerNormalization(name="final_ln")(x))
    outputs = wrap(keras.layers.Dense(10, name="head"), LAYERS + 1)(x)
    return keras.Model(tokens, outputs)


TRANSFORMER_BLOCKS = [r"(embed|pos)/.*", r"layer_(\d+)_.*", r"(final_ln|head)/.*"]


def cnn(wrap=_identity):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = inputs
    for i, filters in enumerate((32, 64, 128)):
        x = wrap(keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"conv{i}"), i)(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = wrap(keras.layers.Dense(10, name="head"), 3)(x)
    return keras.Model(inputs, outputs)


CNN_BLOCKS = [r"conv0/.*", r"conv1/.*", r"conv2/.*", r"head/.*"]


def inner(**kwargs):
    opt = keras.optimizers.AdamW(1e-3, weight_decay=0.01, **kwargs)
    opt.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return opt


def block_scales(model, blocks):
    return [rule.lr_scale for rule in lw.layer_decay(model, DECAY, blocks=blocks)]


def make(kind, model_fn, blocks, jit_compile):
    if kind == "set_learning_rate":
        scales = block_scales(model_fn(), blocks)
        model = model_fn(lambda layer, block: lw.SetLearningRate(layer, scales[block]))
        optimizer = inner(clipnorm=1.0)
    else:
        model = model_fn()
        rules = lw.layer_decay(model, DECAY, blocks=blocks)
        no_decay = lw.Rule(r".*/(bias|gamma|beta)", weight_decay=0.0, name="no_decay")
        if kind == "plain":
            # The same math minus the layer-wise rates: Keras' `clipnorm`
            # clips each gradient by its norm, as the rule's `clip_by_norm`.
            optimizer = inner(clipnorm=1.0)
        elif kind == "layerwise":
            clip = lw.Rule(".*", gradient=lw.clip_by_norm(1.0), name="clip")
            optimizer = lw.LayerwiseOptimizer(inner(), rules + [clip, no_decay])
        elif kind == "grad_scaling":
            scaled = [lw.Rule(r.selector, gradient=[lw.clip_by_norm(1.0), lw.scale(r.lr_scale)], name=r.name)
                      for r in rules]
            optimizer = lw.LayerwiseOptimizer(inner(), scaled + [no_decay])
        elif kind == "multi_optimizer":
            optimizers = [inner(clipnorm=1.0) for _ in rules]
            for opt, rule in zip(optimizers, rules):
                opt.learning_rate = 1e-3 * rule.lr_scale

            def select(variable):
                for opt, rule in zip(optimizers, rules):
                    if rule.matches(variable):
                        return opt
                raise ValueError(variable.path)

            optimizer = keras.optimizers.MultiOptimizer(select)
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=jit_compile)
    return model


def two_tapes(model_fn, blocks):
    """The seed's recipe: two optimizers, gradients computed twice."""
    import tensorflow as tf

    model = model_fn()
    head = [v for v in model.trainable_variables if v.path.startswith(("head", "final_ln"))]
    body = [v for v in model.trainable_variables if not v.path.startswith(("head", "final_ln"))]
    opt_body, opt_head = inner(clipnorm=1.0), inner(clipnorm=1.0)
    opt_body.learning_rate = 1e-4
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape_body:
            loss = loss_fn(y, model(x, training=True))
        opt_body.apply(tape_body.gradient(loss, body), body)
        with tf.GradientTape() as tape_head:
            loss = loss_fn(y, model(x, training=True))
        opt_head.apply(tape_head.gradient(loss, head), head)
        return loss

    def fit(x, y, batch_size):
        for i in range(0, len(x), batch_size):
            step(x[i:i + batch_size], y[i:i + batch_size])

    return model, fit, (opt_body, opt_head)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--jit", action="store_true")
    parser.add_argument("--model", choices=("transformer", "cnn"), default="transformer")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--instances", type=int, default=2)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    n = args.steps * args.batch_size
    if args.model == "transformer":
        model_fn, blocks = transformer, TRANSFORMER_BLOCKS
        x = rng.integers(0, VOCAB, size=(n, T)).astype("int32")
    else:
        model_fn, blocks = cnn, CNN_BLOCKS
        x = rng.normal(size=(n, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, size=(n,)).astype("int32")

    kinds = ["plain", "layerwise", "multi_optimizer", "set_learning_rate", "grad_scaling"]
    if keras.backend.backend() == "tensorflow" and not args.jit:
        kinds.append("two_tapes")
    first, optimizers, failed = {}, {}, {}

    def make_run(kind):
        if kind == "two_tapes":
            _, fit, optimizers[kind] = two_tapes(model_fn, blocks)
            run = lambda: fit(x, y, args.batch_size)  # noqa: E731
        else:
            model = make(kind, model_fn, blocks, args.jit)
            optimizers[kind] = model.optimizer
            run = lambda: model.fit(x, y, batch_size=args.batch_size, epochs=1,  # noqa: E731
                                    shuffle=False, verbose=0)
        return warmed_up(kind, run, first, failed)

    med, spread = instance_times(make_run, kinds, args.instances, args.repeats, per_run=args.steps)
    params = sum(int(np.prod(v.shape)) for v in model_fn().trainable_variables)
    print(f"backend={keras.backend.backend()} jit_compile={args.jit} model={args.model} "
          f"params={params} steps={args.steps} batch={args.batch_size} repeats={args.repeats} "
          f"instances={args.instances} (best instance; A/A = slowest/fastest instance)")
    for kind in kinds:
        if kind in failed:
            print(f"  {kind:<18} failed: {failed[kind]}")
            continue
        print(f"  {kind:<18} median step {med[kind] * 1e3:9.2f} ms  ratio {med[kind] / med['plain']:.3f}  "
              f"A/A {spread[kind][1] / spread[kind][0]:.3f}  "
              f"first epoch {first[kind]:6.2f} s  state {state_bytes(optimizers[kind]):>10} bytes")

if __name__ == "__main__":
    main()
