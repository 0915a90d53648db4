"""The demo's network: a small CNN, pretrained on the source task.

Its four blocks, input side first, are `conv1`, `conv2`, `dense` (the
body) and the 5-way `head`. Every target task keeps the source's classes,
so fine-tuning starts from all four pretrained blocks, head included, as
in surgical fine-tuning.
"""

import dataclasses

import keras
import numpy as np

from layerwise.demo import data as data_lib

BODY_BLOCKS = ("conv1", "conv2", "dense")
BLOCKS = BODY_BLOCKS + ("head",)
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def make_body():
    """The CNN body, built, with placeholder weights (see `fresh_weights`)."""
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1"),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2"),
            keras.layers.MaxPooling2D(name="pool"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(64, activation="relu", name="dense"),
        ],
        name="body",
    )


def make_head():
    """The 5-way `head`, built, with placeholder weights."""
    head = keras.layers.Dense(5, name="head")
    head.build((None, 64))
    return head


def fresh_weights(layer, rng):
    """Keras' default initialization (Glorot-uniform kernels, zero biases),
    drawn from the NumPy generator `rng` so that every backend starts from
    the same numbers."""
    weights = []
    for w in layer.weights:
        shape = tuple(w.shape)
        if len(shape) < 2:
            weights.append(np.zeros(shape, "float32"))
            continue
        receptive = int(np.prod(shape[:-2]))
        fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        weights.append(rng.uniform(-limit, limit, shape).astype("float32"))
    return weights


@dataclasses.dataclass(frozen=True)
class Pretrained:
    """The weights of the pretrained body and head."""

    body: list
    head: list


def accuracy(logits, labels):
    """The fraction of `labels` that the `logits`' largest entry names."""
    return float(np.mean(np.argmax(keras.ops.convert_to_numpy(logits), -1) == labels))


def initial_weights(seed=0):
    """The untrained network's weights, drawn by `fresh_weights` from a
    generator seeded with `seed`, body then head.

    Returns:
        A `Pretrained` that holds them.
    """
    body, head = make_body(), make_head()
    rng = np.random.default_rng([seed, 3])
    weights = [fresh_weights(layer, rng) for layer in body.layers + [head]]
    return Pretrained(body=[w for ws in weights[:-1] for w in ws], head=weights[-1])


def pretrain(digits, epochs, seed=0, batch_size=32):
    """Trains the network on the source task (digits 0-4).

    Args:
        digits: The `Digits` splits.
        epochs: Passes over the source training split.
        seed: Seed of the initial weights and of the order of examples.
        batch_size: Examples per step.

    Returns:
        A `Pretrained`.
    """
    body, head = make_body(), make_head()
    initial = initial_weights(seed)
    body.set_weights(initial.body)
    head.set_weights(initial.head)
    model = keras.Sequential([body, head], name="source_model")
    model.compile(keras.optimizers.Adam(2e-3), LOSS)
    train = digits.source_train
    steps_per_epoch = -(-len(train) // batch_size)
    x, y = data_lib.training_stream(train, epochs * steps_per_epoch, batch_size, seed)
    model.fit(x, y, batch_size=batch_size, epochs=epochs,
              steps_per_epoch=steps_per_epoch, shuffle=False, verbose=0)
    return Pretrained(body=body.get_weights(), head=head.get_weights())


class FineTuningModel:
    """The pretrained network, body and head, ready to fine-tune.

    Args:
        pretrained: A `Pretrained`.
    """

    def __init__(self, pretrained):
        self.pretrained = pretrained
        self.body = make_body()
        self.head = make_head()
        self.model = keras.Sequential(
            [keras.Input((8, 8, 1)), self.body, self.head], name="fine_tuned"
        )
        self.reset()

    @property
    def blocks(self):
        """The layers `layerwise` recipes see as blocks, input side first."""
        return [self.body.get_layer(name) for name in BODY_BLOCKS] + [self.head]

    def reset(self):
        """Back to the pretrained weights."""
        self.body.set_weights(self.pretrained.body)
        self.head.set_weights(self.pretrained.head)

    def evaluate(self, split):
        """Accuracy on `split` (a `Split`)."""
        return accuracy(self.model(split.x, training=False), split.y)
