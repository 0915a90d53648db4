"""LISA: layerwise importance-sampled training (Pan et al., 2024).

"LISA: Layerwise Importance Sampling for Memory-Efficient Large Language
Model Fine-Tuning" trains, at any time, the embedding, the head and
`gamma` middle blocks sampled uniformly without replacement, and samples
again every `interval` steps; the other middle blocks are frozen and hold
no optimizer state, so AdamW's two slots exist for a fraction of the
model only.

Two parts: `lisa_rules(model)` gives the optimizer one frozen rule per
middle block (frozen at build: no slots), and the `LISA` callback unfreezes
the sampled blocks through `LayerwiseOptimizer.set_frozen` (a block that
returns starts with fresh state, as a new optimizer would) and freezes the
others (the optimizer created for a block is dropped, slots and all, once
the block is frozen again).
"""

import keras
import numpy as np

from layerwise import _validation
from layerwise._internals import trainers
from layerwise.optim import rules as rules_lib
from layerwise.optim import selectors as selectors_lib
from layerwise.optim.optimizer import layerwise_optimizer_of
from layerwise.recipes import blocks as blocks_lib

PREFIX = "lisa_block_"


def lisa_rules(model, blocks=None):
    """One frozen rule per middle block of `model`, for `LISA` to sample.

    The first block (the embedding) and the last one (final norm and
    head) get no rule: they always train. Each middle block's rule is
    frozen, so the optimizer builds no slots for it; the `LISA` callback
    unfreezes the sampled ones.

    Args:
        model: A built `keras.Model`.
        blocks: Its blocks, input side first, each a list of layers; by
            default `layerwise.detect_blocks(model)`.

    Returns:
        A list of `Rule`s named `"lisa_block_<i>"` (`i` the block's index in
        `blocks`, from 1), each selecting its block's trainable variables
        by path (so they survive saving).

    Example:

    >>> model = keras.Sequential([keras.Input((4,)),
    ...     keras.layers.Dense(4, name="embed"),
    ...     keras.layers.Dense(4, name="layer_0"), keras.layers.Dense(4, name="layer_1"),
    ...     keras.layers.Dense(1, name="head")])
    >>> [(rule.name, rule.frozen, rule.selector.label) for rule in lw.lisa_rules(model)]
    [('lisa_block_1', True, 'layer_0'), ('lisa_block_2', True, 'layer_1')]
    """
    _validation.check_model(model)
    if blocks is None:
        blocks = blocks_lib.detect_blocks(model)
    if not isinstance(blocks, (list, tuple)) or not all(
        isinstance(block, (list, tuple)) and block
        and all(isinstance(layer, keras.layers.Layer) for layer in block)
        for block in blocks
    ):
        raise TypeError(
            "`blocks` must be a list of blocks, each a non-empty list of "
            f"layers, as `layerwise.detect_blocks(model)` returns. Received: blocks={blocks!r}"
        )
    if len(blocks) < 3:
        raise ValueError(
            "`model` must have at least one middle block between its first "
            "(embedding) and last (head) blocks for LISA to sample. Received: "
            f"{len(blocks)} blocks: {[[layer.name for layer in b] for b in blocks]}"
        )
    rules = []
    for index, block in enumerate(blocks[1:-1], start=1):
        paths = [v.path for layer in block for v in layer.trainable_variables]
        label = "+".join(layer.name for layer in block)
        rules.append(
            rules_lib.Rule(
                selectors_lib.VariablePaths(paths, label=label),
                frozen=True,
                name=f"{PREFIX}{index}",
            )
        )
    return rules


def sample_blocks(seed, period, n_blocks, gamma):
    """The blocks `LISA` trains in one period: `gamma` of `n_blocks`,
    uniformly without replacement, from a generator seeded by `(seed,
    period)` (so any period's draw is known without replaying the earlier
    ones).

    Returns:
        A sorted list of indices in `range(n_blocks)`.
    """
    rng = np.random.default_rng([seed, period])
    return sorted(int(i) for i in rng.choice(n_blocks, size=gamma, replace=False))


def _check_int(value, name, low):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"`{name}` must be an integer >= {low}. Received: {name}={value!r}")


class LISA(keras.callbacks.Callback):
    """Trains `gamma` sampled middle blocks at a time (Pan et al., 2024).

    Every `interval` optimizer steps, `gamma` of the blocks ruled by
    `layerwise.lisa_rules(model)` are drawn uniformly without replacement;
    they train, the other middle blocks are frozen, and the blocks without
    a LISA rule (the embedding, the head) always train. The optimizer holds
    slots for the trained blocks only: a block that returns after being
    frozen starts with fresh state (zero slots, its own step count, as a
    new optimizer would: `LayerwiseOptimizer.set_frozen`), a block drawn
    again for the next period keeps its state, and the state of a block
    that leaves is dropped. Each change of the selection costs one retrace
    of the train step.

    The draw of period `p` (steps `p * interval` to `(p + 1) * interval -
    1`) depends only on `seed` and `p`, and the current selection is part
    of the optimizer's saved config: a model saved and loaded in the middle
    of training resumes with the same blocks and the same later draws as
    an uninterrupted run, given a `LISA` with the same arguments.

    Needs a `LayerwiseOptimizer` with the rules of `lisa_rules`, without
    `accumulate_steps`, `ema` or `skip_nonfinite` (their per-step or
    per-variable state would not follow the selection), and
    `steps_per_execution=1`.

    Args:
        gamma: How many middle blocks train at a time, an int >= 1.
        interval: Steps between two draws, an int >= 1 (the paper's `K`).
        seed: The seed of the draws, an int >= 0.
        verbose: If `1`, prints each new selection.

    Example:

    >>> model = keras.Sequential([keras.Input((4,)),
    ...     keras.layers.Dense(4, name="embed"),
    ...     keras.layers.Dense(4, name="layer_0"), keras.layers.Dense(4, name="layer_1"),
    ...     keras.layers.Dense(4, name="layer_2"), keras.layers.Dense(1, name="head")])
    >>> opt = lw.LayerwiseOptimizer(keras.optimizers.AdamW(1e-3), lw.lisa_rules(model))
    >>> model.compile(optimizer=opt, loss="mse")
    >>> lisa = lw.callbacks.LISA(gamma=1, interval=2, seed=0)
    >>> _ = model.fit(np.ones((8, 4)), np.ones((8, 1)), batch_size=2, verbose=0,
    ...               callbacks=[lisa])
    >>> lisa.selection  # the rules training in the last period
    ['lisa_block_2']
    """

    def __init__(self, gamma=2, interval=50, seed=0, verbose=0):
        super().__init__()
        _check_int(gamma, "gamma", 1)
        _check_int(interval, "interval", 1)
        _check_int(seed, "seed", 0)
        self.gamma = int(gamma)
        self.interval = int(interval)
        self.seed = int(seed)
        self.verbose = verbose
        self._optimizer = None
        self._names = []
        self._step = 0

    @property
    def selection(self):
        """The names of the LISA rules training now, sorted."""
        if self._optimizer is None:
            return []
        return [n for n in self._names if not self._optimizer.get_rule(n).frozen]

    def on_train_begin(self, logs=None):
        optimizer = layerwise_optimizer_of(self.model)
        names = [r.name for r in optimizer.rules if r.name and r.name.startswith(PREFIX)]
        if not names:
            raise ValueError(
                "LISA needs the rules of `layerwise.lisa_rules(model)` in the "
                "model's LayerwiseOptimizer, e.g. `LayerwiseOptimizer(AdamW(), "
                "lw.lisa_rules(model))`. Received rules: "
                f"{[r.name for r in optimizer.rules]}"
            )
        if self.gamma > len(names):
            raise ValueError(
                f"`gamma` must be at most the number of middle blocks, {len(names)}. "
                f"Received: gamma={self.gamma}"
            )
        unsupported = {
            "accumulate_steps": optimizer.accumulate_steps if optimizer.accumulate_steps > 1 else None,
            "ema": optimizer.ema,
            "skip_nonfinite": optimizer.skip_nonfinite or None,
            "steps_per_execution": self.model.steps_per_execution
            if self.model.steps_per_execution != 1 else None,
        }
        unsupported = {k: v for k, v in unsupported.items() if v is not None}
        if unsupported:
            raise ValueError(
                "LISA needs a LayerwiseOptimizer without `accumulate_steps`, "
                "`ema` and `skip_nonfinite`, and `steps_per_execution=1`: "
                "their state would not follow the blocks it samples. Received: "
                + ", ".join(f"{k}={v!r}" for k, v in unsupported.items())
            )
        if not optimizer.built:
            # TensorFlow's `fit` builds it in the first step, after this
            # call: the draw must come first, so that the blocks it leaves
            # frozen get no slots.
            optimizer.build(self.model.trainable_variables)
        # Numerically: `lisa_block_10` after `lisa_block_9`.
        self._names = sorted(names, key=lambda n: int(n[len(PREFIX):]))
        self._optimizer = optimizer
        self._step = int(keras.ops.convert_to_numpy(optimizer.iterations))
        self._select(self._step // self.interval)

    def on_train_batch_begin(self, batch, logs=None):
        if self._step % self.interval == 0:
            self._select(self._step // self.interval)

    def on_train_batch_end(self, batch, logs=None):
        # Counted here: on JAX the optimizer's step counter is written back
        # only at epoch ends.
        self._step += 1

    def _select(self, period):
        wanted = [
            self._names[i] for i in sample_blocks(self.seed, period, len(self._names), self.gamma)
        ]
        current = self.selection
        if wanted == current:
            return
        # The selection decides which variables train and what state the
        # optimizer holds: the running state must be in the variables.
        trainers.write_back_state(self.model)
        for name in current:
            if name not in wanted:
                self._optimizer.set_frozen(name, True)
        for name in wanted:
            if name not in current:
                self._optimizer.set_frozen(name, False)
        self.model.make_train_function(force=True)
        if self.verbose:
            print(f"Step {self._step}: LISA trains {wanted}")
