"""A GAN trained with ONE loss and ONE optimizer step per batch.

The usual loop alternates two passes per batch: a discriminator step on real
and fake samples, then a generator step through a frozen discriminator. Here
one model computes both terms, and gradient ops route each gradient where it
belongs:

    fake = reverse_gradient(G(z))             # generator ascends D's loss
    loss = bce(D(real), 1) + bce(D(fake), 0)  # one loss, one backward pass

The discriminator minimizes `loss`; the generator receives the reversed
gradient, i.e. it maximizes D's error on fakes (the minimax GAN; a factor
is kept as a variable so it can change during training). Data: a ring of
8 Gaussians in 2-D. Quality: the fraction of generated points within 0.2
of a mode (and the number of modes covered). Prints timing for both.

Run: KERAS_BACKEND=jax python examples/gan_single_loss.py
"""

import time

import keras
import numpy as np
from keras import ops

from layerwise.ops import reverse_gradient

STEPS, BATCH, NOISE = 1500, 128, 4
MODES = np.stack(
    [np.cos(np.arange(8) * np.pi / 4), np.sin(np.arange(8) * np.pi / 4)], 1
).astype("float32") * 2.0


def sample_real(rng, n):
    return MODES[rng.integers(0, 8, n)] + 0.05 * rng.standard_normal((n, 2)).astype("float32")


def mlp(out, activation=None):
    return keras.Sequential(
        [keras.layers.Dense(64, activation="relu"),
         keras.layers.Dense(64, activation="relu"),
         keras.layers.Dense(out, activation=activation)]
    )


def quality(generator, rng):
    points = ops.convert_to_numpy(generator(rng.standard_normal((2000, NOISE)).astype("float32")))
    distance = np.linalg.norm(points[:, None] - MODES[None], axis=-1)
    near = distance.min(1) < 0.2
    modes = len(set(distance.argmin(1)[near]))
    return near.mean(), modes


class SingleLossGAN(keras.Model):
    """One forward, one loss, one optimizer step for both networks."""

    def __init__(self):
        super().__init__()
        self.generator, self.discriminator = mlp(2), mlp(1)

    def call(self, inputs):
        real, z = inputs
        fake = reverse_gradient(self.generator(z))
        logits = self.discriminator(ops.concatenate([real, fake], 0))
        return logits


def single_loss_training(rng):
    gan = SingleLossGAN()
    labels = np.concatenate([np.ones((BATCH, 1)), np.zeros((BATCH, 1))]).astype("float32")
    gan.compile(
        keras.optimizers.Adam(1e-3, beta_1=0.5),
        keras.losses.BinaryCrossentropy(from_logits=True),
        jit_compile=keras.backend.backend() != "torch",
    )
    real = sample_real(rng, STEPS * BATCH)
    z = rng.standard_normal((STEPS * BATCH, NOISE)).astype("float32")
    data = (real.reshape(STEPS, BATCH, 2), z.reshape(STEPS, BATCH, NOISE))
    start = time.perf_counter()
    for step in range(STEPS):
        gan.train_on_batch((data[0][step], data[1][step]), labels)
    return gan.generator, time.perf_counter() - start, STEPS


def alternating_training(rng):
    generator, discriminator = mlp(2), mlp(1)
    bce = keras.losses.BinaryCrossentropy(from_logits=True)
    jit = keras.backend.backend() != "torch"
    discriminator.compile(keras.optimizers.Adam(1e-3, beta_1=0.5), bce, jit_compile=jit)
    z_in = keras.Input((NOISE,))
    discriminator.trainable = False
    combined = keras.Model(z_in, discriminator(generator(z_in)))
    combined.compile(keras.optimizers.Adam(1e-3, beta_1=0.5), bce, jit_compile=jit)
    ones, zeros = np.ones((BATCH, 1), "float32"), np.zeros((BATCH, 1), "float32")
    d_labels = np.concatenate([ones, zeros])
    start = time.perf_counter()
    for _ in range(STEPS):
        z = rng.standard_normal((BATCH, NOISE)).astype("float32")
        fake = ops.convert_to_numpy(generator(z))
        discriminator.trainable = True
        discriminator.train_on_batch(np.concatenate([sample_real(rng, BATCH), fake]), d_labels)
        discriminator.trainable = False
        combined.train_on_batch(rng.standard_normal((BATCH, NOISE)).astype("float32"), ones)
    return generator, time.perf_counter() - start, 3 * STEPS


def main():
    for name, train in [("single loss", single_loss_training), ("alternating", alternating_training)]:
        keras.utils.set_random_seed(0)
        rng = np.random.default_rng(0)
        generator, seconds, passes = train(rng)
        near, modes = quality(generator, rng)
        print(
            f"{name:<12} {seconds:6.2f} s  {passes} model calls  "
            f"{near:5.1%} of samples within 0.2 of a mode, {modes}/8 modes"
        )


if __name__ == "__main__":
    main()
