"""The README's quick example, runnable: per-group learning rates, no decay
on biases and norms, a frozen stem and per-group clipping on a small text
classifier."""

import keras
import numpy as np

import layerwise as lw


def build_model():
    tokens = keras.Input((16,), dtype="int32")
    x = keras.layers.Embedding(100, 32, name="embedding")(tokens)
    x = keras.layers.Dense(32, activation="relu", name="stem")(x)
    encoder = keras.Sequential(
        [keras.layers.Dense(32, activation="relu", name="ffn"),
         keras.layers.LayerNormalization(name="norm")],
        name="encoder",
    )
    x = encoder(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    outputs = keras.layers.Dense(4, name="head")(x)
    return keras.Model(tokens, outputs)


def main():
    model = build_model()
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.AdamW(1e-3, weight_decay=0.01),
        rules=[
            lw.Rule(model.get_layer("embedding"), lr_scale=0.1, name="embeddings"),
            lw.Rule("encoder/.*", lr_scale=0.5, gradient=[lw.clip_by_norm(1.0)], name="encoder"),
            lw.Rule(".*/bias|.*/gamma|.*/beta", weight_decay=0.0, name="no_decay"),
            lw.Rule(lambda v: "stem" in v.path, frozen=True, name="stem"),
        ],
    )
    model.compile(optimizer=opt, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x = rng.integers(0, 100, size=(256, 16)).astype("int32")
    y = rng.integers(0, 4, size=(256,)).astype("int32")
    model.fit(x, y, epochs=2, verbose=0)
    opt.summary()


if __name__ == "__main__":
    main()
