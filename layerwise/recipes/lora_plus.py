"""LoRA+: the B factors of LoRA learn `ratio` times faster than the A factors.

LoRA (Hu et al. 2021) trains a low-rank update `A @ B` of a frozen kernel.
LoRA+ (Hayou, Ghosh and Yu 2024, "LoRA+: Efficient Low Rank Adaptation of
Large Models", arXiv:2402.12354) shows that with one learning rate for
both factors, feature learning is inefficient at large width, and sets
`lr_B = ratio * lr_A`, `ratio` about 16. PEFT implements it as
`peft.optimizers.create_loraplus_optimizer`.

Keras layers carry LoRA themselves (`layer.enable_lora(rank)` on `Dense`,
`EinsumDense`, `Embedding` and `Conv1D/2D/3D`): `lora_plus` finds them
through their public `lora_enabled` flag and returns plain `Rule`s for
their factors.
"""

import keras

from layerwise import _validation
from layerwise._internals import layers as internal_layers
from layerwise.optim import rules as rules_lib
from layerwise.optim import selectors as selectors_lib

# The Keras layers with `enable_lora` (and their subclasses, e.g.
# keras-hub's `ReversibleEmbedding`).
_LORA_LAYERS = (
    keras.layers.Dense,
    keras.layers.EinsumDense,
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
)


def lora_factors(layer):
    """`(A, B)`: the LoRA factors of a layer with LoRA enabled, or `None`.

    Args:
        layer: Any `keras.layers.Layer`.

    Returns:
        The pair of variables `(lora_kernel_a, lora_kernel_b)`
        (`(lora_embeddings_a, lora_embeddings_b)` for an `Embedding`), or
        `None` if `layer` has no LoRA enabled.

    Example:

    >>> from layerwise.recipes.lora_plus import lora_factors
    >>> dense = keras.layers.Dense(8)
    >>> dense.build((None, 4))
    >>> print(lora_factors(dense))
    None
    >>> dense.enable_lora(rank=2)
    >>> [v.name for v in lora_factors(dense)]
    ['lora_kernel_a', 'lora_kernel_b']
    """
    if isinstance(layer, keras.layers.Embedding) and layer.lora_enabled:
        return layer.lora_embeddings_a, layer.lora_embeddings_b
    if isinstance(layer, _LORA_LAYERS) and layer.lora_enabled:
        return layer.lora_kernel_a, layer.lora_kernel_b
    return None


def lora_plus(model, ratio=16.0):
    """LoRA+ learning rates: each LoRA B factor at `ratio` times A's rate.

    For every layer of `model` (nested ones included) with LoRA enabled,
    the B factor (`lora_kernel_b`, `lora_embeddings_b`, the one Keras
    initializes to zeros) gets `lr_scale=ratio` and the A factor
    (`lora_kernel_a`, `lora_embeddings_a`) `lr_scale=1.0`: with the inner
    optimizer at learning rate `lr`, `lr_A = lr` and `lr_B = ratio * lr`.
    The base kernel stays as `enable_lora` left it: not trainable, so it
    gets no gradient, no optimizer slots and no rule. Other trainable
    variables (biases, norms, heads) get no rule either: they learn at the
    inner optimizer's rate.

    This is PEFT's `create_loraplus_optimizer(model, optimizer_cls,
    optimizer_kwargs, loraplus_lr_ratio=ratio)` with two differences: PEFT
    puts the LoRA factors of embedding layers at a separate, absolute rate
    `loraplus_lr_embedding` (1e-6 by default), where here an `Embedding`'s
    factors follow the same rule as any other layer's (`lora_embeddings_b`
    at `ratio * lr`); and PEFT also moves every trainable one-dimensional
    parameter (biases) into its B group, at `ratio * lr`, where here they
    keep `lr` (add a `Rule` to change that).

    Args:
        model: A built `keras.Model` in which at least one layer has LoRA
            enabled (`layer.enable_lora(rank)`, or keras-hub's
            `backbone.enable_lora(rank)`).
        ratio: `lr_B / lr_A`, a finite number >= 0. LoRA+'s paper
            recommends 16 (its default here) and tunes it in 2 to 2^8.

    Returns:
        Two `Rule`s selecting their variables by exact path, so that a
        model saved with its optimizer reloads with them:
        `Rule(<B factors>, lr_scale=ratio, name="lora_plus_b")` and
        `Rule(<A factors>, lr_scale=1.0, name="lora_plus_a")`.

    Example:

    >>> from layerwise.recipes.lora_plus import lora_plus
    >>> model = keras.Sequential([keras.Input((8,)),
    ...     keras.layers.Dense(16, name="body"),
    ...     keras.layers.Dense(2, name="head")])
    >>> model.layers[0].enable_lora(rank=4)
    >>> for rule in lora_plus(model, ratio=16.0):
    ...     print(rule)
    Rule(LoRA B: '...body/lora_kernel_b', lr_scale=16.0, name='lora_plus_b')
    Rule(LoRA A: '...body/lora_kernel_a', lr_scale=1.0, name='lora_plus_a')
    >>> opt = lw.LayerwiseOptimizer(keras.optimizers.AdamW(1e-4),
    ...                             rules=lora_plus(model))
    """
    if not _validation.is_real_number(ratio):
        raise TypeError(
            f"`ratio` must be a finite number >= 0. Received: ratio={ratio!r}"
        )
    ratio = _validation.check_nonnegative_finite(ratio, "ratio")
    _validation.check_model(model)
    trainable = {id(v) for v in model.trainable_variables}
    a_paths, b_paths = [], []
    for layer in internal_layers.flatten_layers(model):
        factors = lora_factors(layer)
        if factors is None:
            continue
        a, b = factors
        # A layer set `trainable=False` keeps its factors out of the
        # optimizer: a rule for them would match nothing it is built on.
        if id(a) in trainable:
            a_paths.append(a.path)
        if id(b) in trainable:
            b_paths.append(b.path)
    if not b_paths and not a_paths:
        raise ValueError(
            "`model` must have at least one trainable layer with LoRA "
            "enabled: call `layer.enable_lora(rank)` on its Dense, "
            "EinsumDense, Embedding or Conv layers (or keras-hub's "
            "`backbone.enable_lora(rank)`) first. Received: "
            f"model={model.name!r}, with none"
        )
    rules = []
    if b_paths:
        rules.append(rules_lib.Rule(
            selectors_lib.VariablePaths(b_paths, label=_label("LoRA B", b_paths)),
            lr_scale=ratio, name="lora_plus_b"))
    if a_paths:
        rules.append(rules_lib.Rule(
            selectors_lib.VariablePaths(a_paths, label=_label("LoRA A", a_paths)),
            lr_scale=1.0, name="lora_plus_a"))
    return rules


def _label(kind, paths):
    shown = ", ".join(repr(p) for p in paths[:2])
    more = f" and {len(paths) - 2} more" if len(paths) > 2 else ""
    return f"{kind}: {shown}{more}"
