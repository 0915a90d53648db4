"""The demo's network: a small CNN body, pretrained on the source task.

The body (`conv1`, `conv2`, `dense`) is what fine-tuning may keep or
damage. Pretraining puts a 5-way `source_head` on it; fine-tuning puts a
new `head` on a copy of the pretrained body and never trains the source
head, so the source head on the fine-tuned body measures what is left of
the source task.
"""

import dataclasses

import keras
import numpy as np

from layerwise.demo import data as data_lib

BODY_BLOCKS = ("conv1", "conv2", "dense")
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


def make_head(name):
    head = keras.layers.Dense(5, name=name)
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
    """The weights of the pretrained body and of the source head."""

    body: list
    source_head: list


def accuracy(logits, labels):
    return float(np.mean(np.argmax(keras.ops.convert_to_numpy(logits), -1) == labels))


def pretrain(digits, epochs, seed=0, batch_size=32):
    """Trains the body and a source head on digits 0-4.

    Args:
        digits: The `Digits` splits.
        epochs: Passes over the source training split.
        seed: Seed of the initial weights and of the order of examples.
        batch_size: Examples per step.

    Returns:
        A `Pretrained`.
    """
    body, head = make_body(), make_head("source_head")
    rng = np.random.default_rng([seed, 3])
    for layer in body.layers + [head]:
        layer.set_weights(fresh_weights(layer, rng))
    model = keras.Sequential([body, head], name="source_model")
    model.compile(keras.optimizers.Adam(2e-3), LOSS)
    train = digits.source_train
    steps_per_epoch = -(-len(train) // batch_size)
    x, y = data_lib.training_stream(train, epochs * steps_per_epoch, batch_size, seed)
    model.fit(x, y, batch_size=batch_size, epochs=epochs,
              steps_per_epoch=steps_per_epoch, shuffle=False, verbose=0)
    return Pretrained(body=body.get_weights(), source_head=head.get_weights())


class FineTuningModel:
    """A pretrained body with a new `head`, and the source head beside it.

    `model` (body + head) is what the optimizer trains. `evaluate` runs the
    body once on target and source images together and reads the new head
    on the first and the untrained source head on the second.

    Args:
        pretrained: A `Pretrained`.
    """

    def __init__(self, pretrained):
        self.pretrained = pretrained
        self.body = make_body()
        self.body.set_weights(pretrained.body)
        self.head = make_head("head")
        self.source_head = make_head("source_head")
        self.source_head.set_weights(pretrained.source_head)
        self.model = keras.Sequential(
            [keras.Input((8, 8, 1)), self.body, self.head], name="fine_tuned"
        )
        inputs = keras.Input((8, 8, 1))
        features = self.body(inputs)
        self._both_heads = keras.Model(
            inputs, [self.head(features), self.source_head(features)]
        )

    @property
    def blocks(self):
        """The layers `layerwise` recipes see as blocks, input side first."""
        return [self.body.get_layer(name) for name in BODY_BLOCKS] + [self.head]

    def reset(self, seed):
        """The pretrained body and a new head initialized from `seed`."""
        self.body.set_weights(self.pretrained.body)
        self.head.set_weights(fresh_weights(self.head, np.random.default_rng([seed, 4])))

    def evaluate(self, target, source):
        """Accuracies of the new head on `target` and of the source head on
        `source` (two `Split`s)."""
        x = np.concatenate([target.x, source.x])
        target_logits, source_logits = self._both_heads(x, training=False)
        n = len(target)
        return (
            accuracy(keras.ops.convert_to_numpy(target_logits)[:n], target.y),
            accuracy(keras.ops.convert_to_numpy(source_logits)[n:], source.y),
        )
