"""Measure how far `SetLearningRate` under Adam is from exact lr scaling.

Trains the same small regression model twice for 20 steps: once with the
first layer wrapped in `SetLearningRate(layer, scale)` under Adam(lr), once
plain with that layer at Adam(lr * scale) (the second layer frozen in both).
Prints the largest weight difference, relative to how far the weights moved,
with Keras' default epsilon and with epsilon corrected to `epsilon / scale`.

Run: KERAS_BACKEND=jax python examples/set_learning_rate_adam_epsilon.py
"""

import keras
import numpy as np

from layerwise.reparam.set_learning_rate import SetLearningRate

LR, STEPS, EPS = 0.01, 20, 1e-7


def run(scale, plain_epsilon, gradient_size):
    rng = np.random.default_rng(0)
    x = rng.random((16, 4), "float32")
    y = gradient_size * rng.random((16, 2), "float32")

    def model(wrap):
        first = keras.layers.Dense(8, activation="tanh")
        second = keras.layers.Dense(2, trainable=False)
        layer = SetLearningRate(first, scale) if wrap else first
        return keras.Sequential([keras.Input((4,)), layer, second]), first

    keras.utils.set_random_seed(1)
    plain, plain_first = model(False)
    keras.utils.set_random_seed(1)
    wrapped, _ = model(True)
    start = [w.copy() for w in plain_first.get_weights()]
    wrapped.compile(keras.optimizers.Adam(LR, epsilon=EPS), "mse")
    plain.compile(keras.optimizers.Adam(LR * scale, epsilon=plain_epsilon), "mse")
    for _ in range(STEPS):
        wrapped.train_on_batch(x, y)
        plain.train_on_batch(x, y)
    got, want = wrapped.layers[0].get_weights(), plain_first.get_weights()
    moved = max(np.abs(w - s).max() for w, s in zip(want, start))
    deviation = max(np.abs(g - w).max() for g, w in zip(got, want))
    return deviation / moved


def main():
    print(f"Adam(lr={LR}, epsilon={EPS}), {STEPS} steps; max |dtheta| / max move")
    print("scale   target-size  vs Adam(lr*scale, eps)  vs Adam(lr*scale, eps/scale)")
    for scale in (10.0, 0.1, 0.01):
        for size in (1.0, 1e-3):
            naive = run(scale, EPS, size)
            exact = run(scale, EPS / scale, size)
            print(f"{scale:<7} {size:<12} {naive:<23.2e} {exact:.2e}")


if __name__ == "__main__":
    main()
