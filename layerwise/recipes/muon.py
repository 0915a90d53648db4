"""`muon_rules`: the hidden matrices of a model to Muon, the rest to AdamW.

Muon orthogonalizes the update of a weight matrix, which suits the hidden
matrices of a network; embeddings, the output layer, tied weights, vectors
(biases, norms) and matrices too thin to orthogonalize learn better with
AdamW (Jordan et al., "Muon", 2024; timm's `param_groups_muon`). The recipe
returns one plain `Rule` per route and reason, so `summary()` shows each
variable's route under "Rules":

- `"muon"`: to the given Muon optimizer, which orthogonalizes it;
- `"muon (AdamW path)"`: to the Muon optimizer, which (Keras' `Muon`)
  updates it with its own AdamW step at `learning_rate * adam_lr_ratio`:
  Keras' Muon orthogonalizes rank-2 variables only, so a convolution kernel
  that passes timm's test still takes this path (unless `conv="flatten"`:
  then a `FlattenedMuon` orthogonalizes it), as does a variable whose
  path contains "embedding" (`exclude_embeddings`) or one of
  `exclude_layers`;
- `"adamw: <reason>"`: no optimizer of its own, so the wrapper's default
  (inner) optimizer updates it; the reason is the first of `embedding`,
  `tied`, `output layer`, then timm's `_is_suitable_for_muon` test on the
  shape: `0-D` / `1-D`, `1 non-unit dim`, `smallest dim <n>`,
  `aspect ratio <r>`.
"""

import math
import numbers
import warnings

import keras

from layerwise import _validation
from layerwise._internals import optimizers as internal_optimizers
from layerwise.optim import flattened_muon
from layerwise.optim import rules as rules_lib
from layerwise.optim import selectors as selectors_lib
from layerwise.recipes import roles as roles_lib
from layerwise.recipes import stacks as stacks_lib

_ADAMW_PATH = (None, "muon", "default")
_CONV = (None, "flatten")
# The kernels whose last axis is the output, so that flattening the others
# gives the matrix of fan-in by outputs (transposed and depthwise
# convolutions lay their kernels out otherwise).
_FLATTENABLE_CONVS = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)


def muon_suitability(shape, min_dim=4, max_aspect_ratio=128):
    """Why a variable of this shape is unsuited to Muon, or `None`.

    timm's `_is_suitable_for_muon` in Keras' layout: the variable needs at
    least 2 dimensions larger than 1; a kernel of rank > 2 counts as the
    matrix `(prod(shape[:-1]), shape[-1])` (all but the output axis
    flattened: a `Conv2D` kernel `(h, w, in, out)` as `(h * w * in, out)`,
    timm's `(out, in * h * w)` transposed); that matrix's smaller side must be
    at least `min_dim` and its aspect ratio (larger side / smaller side) at
    most `max_aspect_ratio`.

    Args:
        shape: The variable's shape, a tuple of ints.
        min_dim: The smallest side allowed, timm's `min_dim_size` (4).
        max_aspect_ratio: The largest aspect ratio allowed, timm's (128).

    Returns:
        `None` if suitable, else the reason: `"1-D"` (`"0-D"`),
        `"1 non-unit dim"`, `"smallest dim 2"`, `"aspect ratio 300"`.

    Example:

    >>> from layerwise.recipes.muon import muon_suitability
    >>> muon_suitability((64, 128)) is None
    True
    >>> muon_suitability((4, 4, 3, 96)) is None  # timm's (96, 3, 4, 4)
    True
    >>> muon_suitability((4, 1200)), muon_suitability((64,))
    ('aspect ratio 300', '1-D')
    """
    shape = tuple(int(d) for d in shape)
    if len(shape) < 2:
        return f"{len(shape)}-D"
    non_unit = sum(d > 1 for d in shape)
    if non_unit < 2:
        return f"{non_unit} non-unit dim"
    rows, cols = math.prod(shape[:-1]), shape[-1]
    smallest, largest = min(rows, cols), max(rows, cols)
    if smallest < min_dim:
        return f"smallest dim {smallest}"
    ratio = largest / smallest
    if ratio > max_aspect_ratio:
        return f"aspect ratio {ratio:.4g}"
    return None


def _check_number(value, name, low):
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not value >= low:
        raise ValueError(f"`{name}` must be a number >= {low}. Received: {name}={value!r}")


def _top_of(layer):
    """The layers that close `layer` if it holds a stack of blocks (ViT's
    encoder ends in its final norm), else `[layer]`: the head, not every
    block the output passes through."""
    tower = stacks_lib.tower(layer)
    return tower.blocks()[-1] if tower is not None else [layer]


def _resolve_output_layers(model, output_layers):
    if output_layers is None:
        found = roles_lib.output_layers(model)
        if found is None:
            raise ValueError(
                "`output_layers` must be given for a subclassed model: it has "
                "no graph to find the layers producing its outputs. Pass the "
                "head, e.g. `output_layers=[model.head]`, or `[]` to route the "
                f"head like any other layer. Received: output_layers=None for "
                f"model={model.name!r} ({type(model).__name__})"
            )
        return [layer for found_layer in found for layer in _top_of(found_layer)]
    if isinstance(output_layers, (keras.layers.Layer, str)):
        output_layers = [output_layers]
    if not isinstance(output_layers, (list, tuple)):
        raise TypeError(
            "`output_layers` must be a list of layers or layer names. "
            f"Received: output_layers={output_layers!r}"
        )
    resolved = []
    for item in output_layers:
        if isinstance(item, str):
            try:
                item = model.get_layer(item)
            except ValueError:
                raise ValueError(
                    "`output_layers` must name layers of the model. Received: "
                    f"output_layers={output_layers!r}; {item!r} is not one of "
                    f"{[layer.name for layer in model.layers]}"
                ) from None
        if not isinstance(item, keras.layers.Layer):
            raise TypeError(
                "`output_layers` must be a list of layers or layer names. "
                f"Received: output_layers={output_layers!r}"
            )
        resolved.append(item)
    return resolved


def _is_conv_kernel(role):
    return role.variable.path.endswith("/kernel") and any(
        isinstance(owner, _FLATTENABLE_CONVS) and owner.kernel is role.variable
        for owner in role.owners
    )


def _check_conv(conv, muon):
    if conv not in _CONV:
        raise ValueError(f"`conv` must be one of {_CONV}. Received: conv={conv!r}")
    flattens = isinstance(muon, flattened_muon.FlattenedMuon)
    if conv == "flatten" and not flattens:
        raise TypeError(
            "With `conv='flatten'`, `muon` must be a `layerwise.FlattenedMuon` "
            "(Keras' `Muon` updates convolution kernels with its AdamW step), "
            "or `None` for a new one. Received: "
            f"muon={type(muon).__name__}"
        )
    if conv is None and flattens:
        raise ValueError(
            "`muon` is a `FlattenedMuon`, which orthogonalizes every variable "
            "of rank > 2 routed to it: pass `conv='flatten'` so that only "
            "convolution kernels are. Received: conv=None"
        )


def _route(role, output_ids, muon, adamw_path, min_dim, max_aspect_ratio, conv=None):
    if role.embedding:
        return "adamw: embedding"
    if role.tied:
        return "adamw: tied"
    if id(role.variable) in output_ids:
        return "adamw: output layer"
    reason = muon_suitability(role.variable.shape, min_dim, max_aspect_ratio)
    if reason is not None:
        return f"adamw: {reason}"
    rank = len(role.variable.shape)
    if conv == "flatten" and rank > 2 and not _is_conv_kernel(role):
        return f"adamw: {rank}-D, not a conv kernel"
    if internal_optimizers.muon_uses_adamw(muon, role.variable):
        if adamw_path == "default":
            return "adamw: Muon's AdamW path"
        return "muon (AdamW path)"
    return "muon"


def muon_rules(
    model,
    muon=None,
    *,
    output_layers=None,
    adamw_path=None,
    min_dim=4,
    max_aspect_ratio=128,
    conv=None,
):
    """Rules that send the hidden matrices of `model` to a Muon optimizer.

    Every trainable variable is routed, by the first reason that applies:

    1. held by an embedding layer: default optimizer (`"adamw: embedding"`);
    2. tied, used by more than one layer: default (`"adamw: tied"`);
    3. held by a layer producing the model's outputs (the head): default
       (`"adamw: output layer"`);
    4. unsuited to Muon by timm's shape test (`muon_suitability`): default
       (`"adamw: 1-D"`, `"adamw: aspect ratio 300"`, ...);
    5. otherwise: `muon`, as rule `"muon"`, or `"muon (AdamW path)"` for the
       variables Keras' `Muon` does not orthogonalize (rank other than 2,
       such as convolution kernels, or excluded by `exclude_embeddings` /
       `exclude_layers`): it updates them with its AdamW step at
       `learning_rate * adam_lr_ratio` and `adam_weight_decay`. With
       `conv="flatten"`, the kernels of `Conv1D`/`Conv2D`/`Conv3D` layers
       are orthogonalized flattened instead (rule `"muon"`), and the other
       variables of rank > 2 go to the default optimizer
       (`"adamw: 3-D, not a conv kernel"`).

    "Default" means the wrapper's inner optimizer (typically AdamW): those
    rules set nothing but a name. All rules select exact variable paths, so
    they survive `model.save()` / `keras.models.load_model()`.

    Args:
        model: A built `keras.Model`.
        muon: An unbuilt optimizer for the hidden matrices, by default a new
            `keras.optimizers.Muon()`. All `muon` rules share it.
        output_layers: The layers producing the outputs (instances or names
            of the model's layers), or `[]` for none. By default they are
            found in a Functional or `Sequential` model's graph (see
            `layerwise.recipes.roles.output_layers`; a layer holding a stack
            of blocks, such as ViT's encoder, counts by its top block, its
            final norm); a subclassed model must pass them.
        adamw_path: What to do with the variables Keras' `Muon` would update
            with its AdamW step (step 5): `None` (default) routes them to
            Muon and warns, `"muon"` does the same silently, `"default"`
            routes them to the default optimizer instead (rule
            `"adamw: Muon's AdamW path"`).
        min_dim: Smallest matrix side for Muon (timm: 4).
        max_aspect_ratio: Largest aspect ratio for Muon (timm: 128).
        conv: `None` (default): convolution kernels follow Keras' `Muon`
            (step 5). `"flatten"`: they are orthogonalized as the matrix
            `(prod(shape[:-1]), shape[-1])`, as timm does, by a
            `layerwise.FlattenedMuon` (`muon` must be one, or `None` for a
            new one).

    Returns:
        A list of `Rule`s, the Muon ones first, then one per reason in order
        of first appearance.

    Raises:
        ValueError: if no variable is routed to Muon's orthogonalized update
            (a Muon optimizer with nothing to orthogonalize is a mistake).

    Example:

    >>> from layerwise.recipes.muon import muon_rules
    >>> inputs = keras.Input((4,), dtype="int32")
    >>> x = keras.layers.Embedding(50, 16, name="embed")(inputs)
    >>> x = keras.layers.Dense(32, name="hidden")(keras.layers.Flatten()(x))
    >>> model = keras.Model(inputs, keras.layers.Dense(3, name="head")(x))
    >>> rules = muon_rules(model, muon=keras.optimizers.Muon(0.02))
    >>> [(rule.name, rule.selector.paths) for rule in rules]
    [('muon', ('hidden/kernel',)), ('adamw: embedding', ('embed/embeddings',)), \
('adamw: 1-D', ('hidden/bias',)), ('adamw: output layer', ('head/kernel', 'head/bias'))]
    >>> opt = lw.LayerwiseOptimizer(keras.optimizers.AdamW(1e-3), rules)
    """
    _validation.check_model(model)
    if muon is None:
        muon = flattened_muon.FlattenedMuon() if conv == "flatten" else keras.optimizers.Muon()
    if not isinstance(muon, keras.optimizers.Optimizer):
        raise TypeError(
            "`muon` must be a `keras.optimizers.Optimizer` instance, such as "
            f"`keras.optimizers.Muon(...)`. Received: muon={muon!r}"
        )
    if adamw_path not in _ADAMW_PATH:
        raise ValueError(
            f"`adamw_path` must be one of {_ADAMW_PATH}. Received: adamw_path={adamw_path!r}"
        )
    _check_conv(conv, muon)
    _check_number(min_dim, "min_dim", 1)
    _check_number(max_aspect_ratio, "max_aspect_ratio", 1)
    heads = _resolve_output_layers(model, output_layers)
    output_ids = {id(v) for layer in heads for v in layer.weights}
    routes = {}
    for role in roles_lib.variable_roles(model):
        name = _route(role, output_ids, muon, adamw_path, min_dim, max_aspect_ratio, conv)
        routes.setdefault(name, []).append(role.variable.path)
    if "muon" not in routes:
        reasons = {name: len(paths) for name, paths in routes.items()}
        raise ValueError(
            "`model` must have at least one hidden matrix for Muon to "
            "orthogonalize. Received: model="
            f"{model.name!r}, whose variables route as {reasons} (if the "
            "layer producing an output is a whole block, name the head with "
            "`output_layers=`)"
        )
    fallback = routes.get("muon (AdamW path)", [])
    if fallback and adamw_path is None:
        warnings.warn(
            f"{len(fallback)} variables routed to Muon are updated by its AdamW "
            "step (Keras' Muon orthogonalizes rank-2 variables only), at "
            "`learning_rate * adam_lr_ratio` with `adam_weight_decay`: "
            f"{fallback}. Pass `adamw_path='default'` to give them to the "
            "default optimizer, or `adamw_path='muon'` to keep them on Muon "
            "without this warning.",
            stacklevel=2,
        )
    order = ["muon", "muon (AdamW path)"] + [n for n in routes if n.startswith("adamw")]
    return [
        rules_lib.Rule(
            selectors_lib.VariablePaths(routes[name], label=name),
            optimizer=muon if name.startswith("muon") else None,
            name=name,
        )
        for name in order
        if name in routes
    ]
