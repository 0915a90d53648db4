"""A custom training loop with a `keras.utils.Progbar` showing `observe` values.

The loop is yours (data order, per-batch logic, when to evaluate); each step
is Keras' `train_on_batch`, so it runs unchanged on TensorFlow, JAX and
PyTorch. `train_on_batch(..., return_dict=True)` returns every metric of the
model, the `Observe` layers' included. Keras 3.15 resets the metrics at
every `train_on_batch` call, so these are the values of this batch; `Progbar`
averages them over the epoch (pass a name in `stateful_metrics` to show it
as is instead, e.g. for `reduction="last"`).

Run: KERAS_BACKEND=jax python examples/custom_loop_progbar.py
"""

import keras
import numpy as np

from layerwise import observe


def squared_norm(t):
    """Mean over the batch of each sample's squared L2 norm."""
    return keras.ops.mean(keras.ops.sum(t**2, axis=-1))


def build_model():
    inputs = keras.Input((20,))
    h = keras.layers.Dense(64, activation="relu")(inputs)
    h = observe(h, "h_norm", fn=squared_norm)  # Mean over the batch.
    h = observe(
        h, "h_active", fn=lambda t: keras.ops.mean(t > 0), reduction="last"
    )  # Fraction of active units, last batch.
    outputs = keras.layers.Dense(1)(h)
    return keras.Model(inputs, outputs)  # A plain model reports them everywhere.


def main(epochs=3, batch_size=64):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1024, 20)).astype("float32")
    y = (x[:, :1] * 2.0 - x[:, 1:2]).astype("float32")
    x_val, y_val = x[:128], y[:128]

    model = build_model()
    model.compile(optimizer="adam", loss="mse")
    steps = len(x) // batch_size
    for epoch in range(epochs):
        print(f"Epoch {epoch + 1}/{epochs}")
        model.reset_metrics()  # `fit` does this at each epoch start.
        progbar = None
        order = rng.permutation(len(x))
        for step in range(steps):
            batch = order[step * batch_size : (step + 1) * batch_size]
            logs = model.train_on_batch(x[batch], y[batch], return_dict=True)
            if progbar is None:  # Metric names are known after one step.
                progbar = keras.utils.Progbar(steps, stateful_metrics=["h_active"])
            progbar.update(step + 1, values=list(logs.items()))
        val_logs = model.evaluate(x_val, y_val, verbose=0, return_dict=True)
        print(
            "  validation:",
            {k: round(float(v), 4) for k, v in val_logs.items()},
        )
    return logs


if __name__ == "__main__":
    main()
