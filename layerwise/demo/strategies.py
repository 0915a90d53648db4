"""The fine-tuning strategies the demo compares: one table, one entry each.

A `Strategy` says how each parameter learns, given the model and its
blocks (`conv1`, `conv2`, `dense`, `head`, input side first): the rules of
a `layerwise.LayerwiseOptimizer`, callbacks for `fit`, and the inner
optimizer. The experiment gives every strategy the same learning-rate grid,
seeds, data and step budget; the grid's rate is the inner optimizer's
`learning_rate`, so rules state multipliers of it.

Adding a strategy is adding one entry to `STRATEGIES`, e.g. a per-group
optimizer split:

    Strategy(
        "Muon body + AdamW head",
        "Muon on the body's kernels, AdamW on the rest",
        rules=lambda model, blocks: [
            lw.Rule(..., optimizer=keras.optimizers.Muon(...), name="muon")],
        inner=keras.optimizers.AdamW,
    )
"""

import dataclasses
from typing import Callable

import keras

import layerwise as lw
from layerwise.demo import model as model_lib


def _no_rules(model, blocks):
    return []


def _no_callbacks(epochs):
    return []


@dataclasses.dataclass(frozen=True)
class Strategy:
    """One way to fine-tune.

    Args:
        name: Short name, shown in tables and legends.
        description: One line saying what it does.
        rules: `(model, blocks) -> list of layerwise.Rule`. Called once per
            compiled model; each run resets the weights and the optimizer
            state, so rules must not depend on the learning rate or seed.
        callbacks: `(epochs) -> list of keras.callbacks.Callback`, fresh
            for every run.
        inner: The inner optimizer's class, called as
            `inner(learning_rate=rate)`.
    """

    name: str
    description: str
    rules: Callable = _no_rules
    callbacks: Callable = _no_callbacks
    inner: Callable = keras.optimizers.Adam


def _frozen_body(model, blocks):
    return [lw.Rule(blocks[:-1], frozen=True, name="body")]


def _layer_decay(model, blocks):
    return lw.layer_decay(model, decay=0.5, blocks=blocks)


def _discriminative(model, blocks):
    # As multipliers of the grid rate: `conv1` learns at 1/100 of the
    # head's rate, the blocks between spaced geometrically (fastai's
    # `slice(lr / 100, lr)`).
    return lw.discriminative(model, lr_range=(0.01, 1.0), blocks=blocks)


def _one_rule_per_block(model, blocks):
    # The head learns from the start; the body's blocks start frozen.
    return [
        lw.Rule(block, frozen=block is not blocks[-1], name=block.name)
        for block in blocks
    ]


def unfreezing_schedule(names, epochs):
    """ULMFiT's order: the last block from epoch 0, then one more block
    from the top every `epochs / len(names)` epochs.

    Args:
        names: Rule names, input side first.
        epochs: Epochs of the run.

    Returns:
        A `GradualUnfreezing` schedule, `{epoch: [names]}`.
    """
    schedule = {}
    for stage, name in enumerate(reversed(names)):
        schedule.setdefault(epochs * stage // len(names), []).append(name)
    return schedule


def _gradual_unfreezing(epochs):
    names = list(model_lib.BODY_BLOCKS) + ["head"]
    return [lw.callbacks.GradualUnfreezing(unfreezing_schedule(names, epochs))]


STRATEGIES = (
    Strategy("one rate", "every parameter at the grid rate"),
    Strategy(
        "frozen body",
        "pretrained body frozen, only the new head trains",
        rules=_frozen_body,
    ),
    Strategy(
        "layer_decay",
        "lw.layer_decay(model, decay=0.5): head x1, dense x0.5, conv2 x0.25, conv1 x0.125",
        rules=_layer_decay,
    ),
    Strategy(
        "discriminative",
        "lw.discriminative(model, lr_range=(0.01, 1.0)): conv1 x0.01, conv2 x0.046, dense x0.22, head x1",
        rules=_discriminative,
    ),
    Strategy(
        "gradual unfreezing",
        "lw.callbacks.GradualUnfreezing: head first, then one block down per quarter of the epochs",
        rules=_one_rule_per_block,
        callbacks=_gradual_unfreezing,
    ),
)
