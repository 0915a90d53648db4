"""Fine-tuning with layer-wise learning rates, on scikit-learn's 8x8 digits.

A small CNN is pretrained on digits 0-4, then fine-tuned on digits 5-9 from
a few labels per class, three ways, with the same seeds and budget:

  (a) one learning rate for every layer,
  (b) the pretrained body frozen, only the new head trained,
  (c) layer-wise rates with `layerwise`: the head at the full rate, each
      block below it at `decay` times the rate of the block above.

The data ship inside scikit-learn; nothing is downloaded.

Run: `python -m layerwise.demo --help`.
"""

import argparse
import os
import sys
import time


def _parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m layerwise.demo",
        description="Fine-tune a pretrained CNN on new digits with one "
        "learning rate, a frozen body, or layer-wise learning rates.",
    )
    parser.add_argument(
        "--backend", choices=["tensorflow", "jax", "torch"], default=None,
        help="Keras backend (default: $KERAS_BACKEND, else tensorflow).",
    )
    parser.add_argument("--epochs", type=int, default=40, help="fine-tuning epochs per strategy")
    parser.add_argument("--pretrain-epochs", type=int, default=15)
    parser.add_argument("--labels-per-class", type=int, default=10)
    parser.add_argument("--decay", type=float, default=0.3, help="layer-wise decay per block")
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--output", default="layerwise_demo.png", help="path of the PNG plot of validation curves"
    )
    return parser.parse_args(argv)


def _load_digits(labels_per_class, seed):
    import numpy as np
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")[..., None]
    y = digits.target.astype("int32")
    rng = np.random.default_rng(seed)
    old = y < 5
    pre = (x[old], y[old])
    new_idx = np.flatnonzero(~old)
    rng.shuffle(new_idx)
    train_idx = np.concatenate(
        [new_idx[y[new_idx] == c][:labels_per_class] for c in range(5, 10)]
    )
    val_idx = np.setdiff1d(new_idx, train_idx)
    fine = (x[train_idx], y[train_idx] - 5)
    val = (x[val_idx], y[val_idx] - 5)
    return pre, fine, val


def _body():
    import keras

    return [
        keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1"),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2"),
        keras.layers.MaxPooling2D(name="pool"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(64, activation="relu", name="dense"),
    ]


def _pretrain(pre, epochs, seed):
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [keras.Input((8, 8, 1))] + _body() + [keras.layers.Dense(5, name="old_head")]
    )
    model.compile(
        keras.optimizers.Adam(2e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(*pre, epochs=epochs, batch_size=32, verbose=0)
    _, accuracy = model.evaluate(*pre, verbose=0)
    return model, accuracy


def _fine_tune_model(pretrained, seed):
    import keras

    keras.utils.set_random_seed(seed + 1)
    body = _body()
    model = keras.Sequential(
        [keras.Input((8, 8, 1))] + body + [keras.layers.Dense(5, name="head")]
    )
    for layer in body:
        layer.set_weights(pretrained.get_layer(layer.name).get_weights())
    return model


STRATEGIES = ("one learning rate", "frozen body + head", "layer-wise")


def _rules(strategy, model, decay):
    import layerwise as lw
    from layerwise.optim.recipes import layer_decay

    body = [model.get_layer(n) for n in ("conv1", "conv2", "dense")]
    if strategy == "frozen body + head":
        return [lw.Rule(body, frozen=True, name="body")]
    if strategy == "layer-wise":
        # Input side first; each block learns `decay` times slower than the
        # block above it, and the head keeps the full rate (the blocks are
        # also what `layer_decay` detects on its own for this model).
        return layer_decay(model, decay=decay, blocks=body + [model.get_layer("head")])
    return []


def _epoch_bar(label, epochs):
    """A callback drawing one `Progbar` per strategy, one tick per epoch."""
    import keras

    # In a terminal the bar redraws in place; in a log, a line every tenth.
    interactive = sys.stdout.isatty()

    class EpochBar(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            print(f"fine-tuning: {label}")
            self.bar = keras.utils.Progbar(
                epochs, stateful_metrics=["loss", "val_accuracy"]
            )

        def on_epoch_end(self, epoch, logs=None):
            values = [("loss", logs["loss"]), ("val_accuracy", logs["val_accuracy"])]
            if interactive:
                self.bar.update(epoch + 1, values)
            elif (epoch + 1) % 10 == 0 or epoch + 1 == epochs:
                print(
                    f"  epoch {epoch + 1:>3}/{epochs}  loss {logs['loss']:.4f}"
                    f"  val_accuracy {logs['val_accuracy']:.4f}"
                )

    return EpochBar()


def _plot(curves, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for label, values in curves.items():
        ax.plot(range(1, len(values) + 1), values, label=label)
    ax.set_xlabel("fine-tuning epoch")
    ax.set_ylabel("validation accuracy (digits 5-9)")
    ax.set_title("Fine-tuning a CNN pretrained on digits 0-4")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(args):
    import keras

    import layerwise as lw

    pre, fine, val = _load_digits(args.labels_per_class, args.seed)
    print(
        f"layerwise demo on {keras.backend.backend()}: pretrain on {len(pre[0])} "
        f"images of digits 0-4, fine-tune on {len(fine[0])} labelled images of "
        f"digits 5-9, validate on {len(val[0])}."
    )
    start = time.perf_counter()
    pretrained, pre_accuracy = _pretrain(pre, args.pretrain_epochs, args.seed)
    print(f"pretrained in {time.perf_counter() - start:.1f}s, train accuracy {pre_accuracy:.3f}\n")

    results, curves = [], {}
    for label in STRATEGIES:
        model = _fine_tune_model(pretrained, args.seed)
        rules = _rules(label, model, args.decay)
        optimizer = lw.LayerwiseOptimizer(keras.optimizers.Adam(args.learning_rate), rules)
        model.compile(
            optimizer,
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        if label == "layer-wise":
            optimizer.build(model.trainable_variables)
            optimizer.summary()
        start = time.perf_counter()
        history = model.fit(
            *fine, validation_data=val, epochs=args.epochs, batch_size=16,
            verbose=0, callbacks=[_epoch_bar(label, args.epochs)],
        )
        elapsed = time.perf_counter() - start
        val_acc = history.history["val_accuracy"]
        curves[label] = val_acc
        results.append((label, val_acc[-1], max(val_acc), elapsed))

    print("\nResults (validation accuracy on digits 5-9, same seeds and budget):")
    print(f"{'strategy':<26}{'final':>8}{'best':>8}{'time (s)':>10}")
    for label, final, best, elapsed in results:
        print(f"{label:<26}{final:>8.3f}{best:>8.3f}{elapsed:>10.1f}")
    winner = max(results, key=lambda r: r[1])
    print(f"\nHighest final accuracy: {winner[0]}.")
    _plot(curves, args.output)
    print(f"Validation curves written to {os.path.abspath(args.output)}")
    return results


def main(argv=None):
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    if args.backend:
        os.environ["KERAS_BACKEND"] = args.backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return run(args)


if __name__ == "__main__":
    main()
