"""μP's learning rates for Adam-family optimizers (MuAdam's rule).

μP (Yang et al. 2021, "Tensor Programs V", arXiv:2203.03466) makes the
best hyperparameters of a small model transfer to wider ones. Under Adam,
an update of a hidden weight matrix changes each output coordinate by
about `lr * fan_in` (every entry moves by about `lr`, and `fan_in` of them
add up), so a width that grows 8x makes hidden activations move 8x more per
step. MuAdam (the `mup` package, `mup/optim.py`) divides the learning rate
of those matrices by the width multiplier of their fan-in; `mup` returns
the same thing as plain `Rule`s.

Which variables are "matrix-like" follows `mup`'s `InfShape`: a weight is
matrix-like when two of its dimensions grow with width, here its fan-in
and its fan-out, read from the layer's layout (`layerwise.recipes.fans`).
It gets `lr_scale = base_fan_in / fan_in`. Everything else keeps the inner
optimizer's rate ("vector-like" or fixed, as MuAdam does): biases,
normalization scales, embeddings and input layers (fan-in fixed), and the
output layer (fan-out fixed).
"""

import keras

from layerwise import _validation
from layerwise._internals import layers as internal_layers
from layerwise.optim import rules as rules_lib
from layerwise.optim import selectors as selectors_lib
from layerwise.recipes import fans as fans_lib


def _owners(model):
    """`id(variable) -> layer` for the layer that holds each weight itself."""
    owner = {}
    # Depth first, parents before their sublayers: the last layer to list a
    # weight is the one that holds it.
    for layer in internal_layers.flatten_layers(model):
        for variable in layer.weights:
            owner[id(variable)] = layer
    return owner


def _describe(variable, layer):
    return f"{variable.path!r} ({type(layer).__name__}, shape {tuple(variable.shape)})"


def _mismatch(reason, variable, base_variable, owner, base_owner):
    return ValueError(
        "`base_model` must have the same architecture as `model`, only "
        f"wider or narrower: {reason}. Received: {_describe(variable, owner)} "
        f"in `model` paired with {_describe(base_variable, base_owner)} in "
        "`base_model`"
    )


def _pairs(model, base_model):
    """The weights of both models side by side, with their layers.

    Keras names layers per session (`dense` vs `dense_7`), so weights pair
    by position in the walk of the layers, and each pair must agree on its
    layer type, weight name, rank and fan axes.
    """
    weights, base_weights = model.weights, base_model.weights
    if len(weights) != len(base_weights):
        raise ValueError(
            "`base_model` must have the same architecture as `model`, only "
            f"wider or narrower. Received: `model` with {len(weights)} "
            f"weights and `base_model` with {len(base_weights)}"
        )
    owners, base_owners = _owners(model), _owners(base_model)
    pairs = []
    for variable, base_variable in zip(weights, base_weights):
        owner, base_owner = owners[id(variable)], base_owners[id(base_variable)]
        if type(owner) is not type(base_owner) or variable.name != base_variable.name:
            raise _mismatch("the layers differ", variable, base_variable, owner, base_owner)
        if len(variable.shape) != len(base_variable.shape):
            raise _mismatch("the ranks differ", variable, base_variable, owner, base_owner)
        axes = fans_lib.fan_axes(owner, variable)
        if axes != fans_lib.fan_axes(base_owner, base_variable):
            raise _mismatch("the layouts differ", variable, base_variable, owner, base_owner)
        pairs.append((variable, base_variable, owner))
    return pairs


def _fan_in_ratio(variable, base_variable, owner):
    """`fan_in / base_fan_in` if the weight is matrix-like, else `None`."""
    fans = fans_lib.fans(owner, variable)
    if fans is None:
        changed = sum(a != b for a, b in zip(variable.shape, base_variable.shape))
        if changed <= 1:  # a vector-like or fixed weight
            return None
        raise ValueError(
            "`mup` must know the fan-in of every weight with more than one "
            "dimension that changes with width, and it knows those of Dense, "
            "EinsumDense, Conv, ConvTranspose, DepthwiseConv, SeparableConv "
            "and Embedding layers only. Received: "
            f"{_describe(variable, owner)}, shape "
            f"{tuple(base_variable.shape)} in `base_model`. Give it a `Rule` "
            "of your own (with `strict=False` if it matches nothing else)"
        )
    fan_in, fan_out = fans
    base_fan_in, base_fan_out = fans_lib.fans(owner, base_variable)
    if fan_in > base_fan_in and fan_out > base_fan_out:
        return fan_in / base_fan_in
    return None


def _label(paths):
    shown = ", ".join(repr(p) for p in paths[:2])
    return shown + (f" and {len(paths) - 2} more" if len(paths) > 2 else "")


def mup(model, base_model, *, weight_decay=None):
    """μP's per-variable learning rates for Adam-family optimizers.

    Every trainable weight of `model` whose fan-in and fan-out both grew
    from `base_model` (a hidden Dense, EinsumDense or Conv kernel) gets
    `lr_scale = base_fan_in / fan_in`, MuAdam's rule: for a hidden
    `Dense(1024)` over a base of 128, `1/8`. The others keep the inner
    optimizer's rate and get no rule:

    - vector-like weights, with at most one dimension that grows: biases,
      normalization scales, embeddings and input layers (fan-in fixed);
    - the output layer (fan-in grows, fan-out fixed): MuAdam leaves its
      learning rate alone too; μP's `1 / width` output multiplier
      (`mup.MuReadout`) is part of the model, not of the optimizer;
    - weights whose fan-in or fan-out shrank (`base_model` wider there)
      or did not change: only growth is scaled, so at base width the
      rules are empty and training is the inner optimizer's.

    This is the learning-rate half of μP. μP also needs, in the model:
    hidden weights initialized with variance `∝ 1 / fan_in` (Keras'
    `he_normal` / `lecun_normal`, or the default `glorot_uniform`, whose
    variance `2 / (fan_in + fan_out)` is that up to a constant for a square
    matrix); the output layer either multiplied by `base_width / width`
    (or zero-initialized) and attention logits scaled by `1 / head_dim`
    instead of `1 / sqrt(head_dim)`. `mup` does none of this; with
    Keras' default initialization and output, the hidden activations
    already move by a width-independent amount per step (see
    `benchmarks/mup_coordinate_check.py`). For SGD-family optimizers μP's
    rule differs (MuSGD); do not use these rules with SGD.

    Weights are paired by their position in a walk of both models'
    layers, so the two models must be built by the same code, at two
    widths; each pair must agree on layer type, weight name, rank and
    layout (fan axes), else a `ValueError`.

    Args:
        model: The built `keras.Model` to train.
        base_model: The same architecture at base width, built (the width
            at which the hyperparameters were tuned). Only its shapes are
            read.
        weight_decay: Optional decoupled weight-decay coefficient of the
            inner optimizer (AdamW). Keras decays by
            `weight_decay * learning_rate`, and the learning rate of a
            matrix-like weight shrinks by its `lr_scale`; MuAdamW keeps the
            product fixed by multiplying its decay by `fan_in /
            base_fan_in`, and so do these rules when this is given.

    Returns:
        A list of `Rule`s, one per distinct multiplier, each selecting its
        variables by exact path and named `"mup_fan_in_x<fan_in /
        base_fan_in>"`. Empty when no weight grew on both sides.

    Example:

    >>> from layerwise.recipes.mup import mup
    >>> def mlp(width):
    ...     return keras.Sequential([keras.Input((16,)),
    ...         keras.layers.Dense(width, activation="relu"),
    ...         keras.layers.Dense(width, activation="relu"),
    ...         keras.layers.Dense(10)])
    >>> rules = mup(mlp(512), base_model=mlp(64))
    >>> [(rule.name, rule.lr_scale) for rule in rules]
    [('mup_fan_in_x8', 0.125)]
    >>> opt = lw.LayerwiseOptimizer(keras.optimizers.Adam(1e-3), rules)
    """
    _validation.check_model(model)
    if not isinstance(base_model, keras.Model):
        raise TypeError(
            f"`base_model` must be a `keras.Model`. Received: base_model={base_model!r}"
        )
    if not base_model.built:
        raise ValueError(
            "`base_model` must be built, so that its variables exist: create "
            "it from a `keras.Input`, call it on a batch, or call "
            "`base_model.build(input_shape)` first. Received: "
            f"base_model={base_model.name!r} (not built)"
        )
    if weight_decay is not None:
        weight_decay = _validation.check_nonnegative_finite(weight_decay, "weight_decay")
    trainable = {id(v) for v in model.trainable_variables}
    groups = {}
    for variable, base_variable, owner in _pairs(model, base_model):
        if id(variable) not in trainable:
            continue
        ratio = _fan_in_ratio(variable, base_variable, owner)
        if ratio is not None:
            groups.setdefault(ratio, []).append(variable.path)
    return [
        rules_lib.Rule(
            selectors_lib.VariablePaths(paths, label=_label(paths)),
            lr_scale=1.0 / ratio,
            weight_decay=None if weight_decay is None else weight_decay * ratio,
            name=f"mup_fan_in_x{ratio:g}",
        )
        for ratio, paths in sorted(groups.items())
    ]
