"""The fine-tuning strategies the demo compares: one table, one entry each.

A `Strategy` says how each parameter learns, given the model and its
blocks (`conv1`, `conv2`, `dense`, `head`, input side first): the rules of
a `layerwise.LayerwiseOptimizer`, callbacks for `fit`, and the inner
optimizer. The experiment gives every strategy the same learning-rate grid,
seeds, data and step budget; the grid's rate is the inner optimizer's
`learning_rate`, so rules state multipliers of it.

The entries: full fine-tuning (the baseline); surgical fine-tuning, one
entry per block (only that block trains, Lee et al. 2023); the depth-wise
recipes `layer_decay` and `discriminative`; gradual unfreezing; and two
per-tensor rates that need no choice of blocks: Auto-RGN
(`lw.relative_gradient_norm`) and the trust ratio (`lw.trust_ratio`).

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
from typing import Optional

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
        block: For surgical fine-tuning, the name of the one block that
            trains; `None` otherwise.
    """

    name: str
    description: str
    rules: Callable = _no_rules
    callbacks: Callable = _no_callbacks
    inner: Callable = keras.optimizers.Adam
    block: Optional[str] = None


def surgical(block):
    """The strategy that trains only `block` (a name in
    `model.BLOCKS`) and freezes the other three."""
    index = model_lib.BLOCKS.index(block)

    def rules(model, blocks):
        others = [b for i, b in enumerate(blocks) if i != index]
        return [lw.Rule(others, frozen=True, name="frozen")]

    return Strategy(
        f"only {block}",
        f"surgical: only {block} trains, the other blocks are frozen",
        rules=rules,
        block=block,
    )


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
    return [lw.callbacks.GradualUnfreezing(unfreezing_schedule(model_lib.BLOCKS, epochs))]


def _kernel(variable):
    return len(variable.shape) > 1


def _auto_rgn(model, blocks):
    # One rule over the kernels: each one's rate is its relative gradient
    # norm over the largest of them, at every step. The biases stay as
    # they are: the paper's code tunes no per-channel parameters (it leaves
    # out BatchNorm's), and a bias's norm is so small that its relative
    # gradient norm would take the largest rate and leave the kernels
    # almost still.
    return [
        lw.Rule(_kernel, update=[lw.relative_gradient_norm()], name="auto_rgn"),
        lw.Rule(lambda variable: not _kernel(variable), frozen=True, name="biases"),
    ]


def _trust_ratio(model, blocks):
    return [lw.Rule(blocks, update=[lw.trust_ratio()], name="trust_ratio")]


BASELINE = Strategy("full fine-tuning", "every parameter trains at the grid rate")
STRATEGIES = (
    BASELINE,
    *(surgical(block) for block in model_lib.BLOCKS),
    Strategy(
        "layer_decay",
        "lw.layer_decay(model, decay=0.5): head x1, dense x0.5, conv2 x0.25, conv1 x0.125",
        rules=_layer_decay,
    ),
    Strategy(
        "discriminative",
        "lw.discriminative(model, lr_range=(0.01, 1.0)): conv1 x0.01, conv2 x0.046, "
        "dense x0.22, head x1",
        rules=_discriminative,
    ),
    Strategy(
        "gradual unfreezing",
        "lw.callbacks.GradualUnfreezing: head first, then one block down per quarter "
        "of the epochs",
        rules=_one_rule_per_block,
        callbacks=_gradual_unfreezing,
    ),
    Strategy(
        "Auto-RGN",
        "lw.relative_gradient_norm(): each tensor's update times its ||g||/||w|| "
        "over the largest, every step",
        rules=_auto_rgn,
    ),
    Strategy(
        "trust ratio",
        "lw.trust_ratio(): each tensor's update rescaled to ||w|| (LAMB's ratio on Adam)",
        rules=_trust_ratio,
    ),
)
