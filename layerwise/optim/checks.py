"""Checks of the optimizers a user hands to `LayerwiseOptimizer`.

The inner optimizer and the optimizers of rules (`Rule(optimizer=...)`)
must be plain, unbuilt Keras optimizers that no other `LayerwiseOptimizer`
owns: the wrapper builds them on the variables it assigns them and drives
their updates. Every message follows Keras' form ("`arg` must be X.
Received: arg=value").
"""

import keras

from layerwise._internals import optimizers as internals

# Keras optimizer arguments that act on the whole step (loss scaling,
# accumulation, averaging): the wrapper runs these stages once for all
# groups, so a rule's optimizer cannot have its own.
_STEP_LEVEL_ARGS = (
    ("gradient_accumulation_steps", "accumulate_steps"),
    ("use_ema", "ema"),
    ("loss_scale_factor", "the inner optimizer's `loss_scale_factor`"),
)


def check_unowned_optimizer(optimizer, arg_name):
    """Fails unless `optimizer` is a plain, unbuilt, unowned Keras optimizer."""
    # Looked up in Keras' registry rather than imported: the optimizer's
    # module imports this one (no import circle).
    wrapper = keras.saving.get_registered_object("layerwise>LayerwiseOptimizer")
    if wrapper is not None and isinstance(optimizer, wrapper):
        raise ValueError(
            f"`{arg_name}` must not be a LayerwiseOptimizer: pass its inner "
            "optimizer and the rules of both in one list instead. Received: "
            f"{arg_name}={optimizer.name!r}"
        )
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        raise ValueError(
            f"`{arg_name}` must not be a LossScaleOptimizer: wrap the other "
            "way round, `keras.optimizers.LossScaleOptimizer("
            "LayerwiseOptimizer(inner, rules))`, so loss scaling stays "
            f"outermost. Received: {arg_name}={optimizer.name!r}"
        )
    if internals.is_multi_optimizer(optimizer):
        raise ValueError(
            f"`{arg_name}` must not be a MultiOptimizer: LayerwiseOptimizer "
            "replaces it. Give each group its optimizer with "
            "`Rule(match, optimizer=...)`. Received: "
            f"{arg_name}={optimizer.name!r}"
        )
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        raise TypeError(
            f"`{arg_name}` must be a `keras.optimizers.Optimizer` instance. "
            f"Received: {arg_name}={optimizer!r}"
        )
    if optimizer.built:
        raise ValueError(
            f"`{arg_name}` must not be built yet: LayerwiseOptimizer builds "
            "it on the variables it assigns it (frozen variables get no "
            f"slots). Pass a fresh optimizer. Received: {arg_name}="
            f"{optimizer.name!r}"
        )
    owner = getattr(optimizer, "_layerwise_owner", None)
    if owner is not None and owner() is not None:
        raise ValueError(
            f"`{arg_name}` already belongs to another LayerwiseOptimizer "
            f"({owner().name!r}): it holds that one's slots and step count. "
            f"Pass a fresh optimizer. Received: {arg_name}={optimizer.name!r}"
        )


def check_group_optimizer(optimizer, arg_name="optimizer"):
    """Fails unless `optimizer` can update one group of a
    `LayerwiseOptimizer` (see `check_unowned_optimizer`), without the
    step-level arguments the wrapper applies to all groups at once."""
    check_unowned_optimizer(optimizer, arg_name)
    for arg, instead in _STEP_LEVEL_ARGS:
        value = getattr(optimizer, arg)
        if value:
            raise ValueError(
                f"`{arg_name}` must not set `{arg}`: it acts on the whole "
                "step, which LayerwiseOptimizer runs once for every group. "
                f"Set {instead if instead.startswith('the') else f'`{instead}`'} "
                f"on LayerwiseOptimizer instead. Received: {arg}={value!r}"
            )
