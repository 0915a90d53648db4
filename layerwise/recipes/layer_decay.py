"""Fine-tuning recipes: layer-wise learning-rate decay and discriminative rates.

Both recipes split a model into an ordered list of *blocks*, input side
first, and return one plain `Rule` per block, to print, edit and combine
with other rules before passing them to `LayerwiseOptimizer`:

- `layer_decay(model, decay)`: block `i` of `L` gets
  `lr_scale = decay ** (L - 1 - i)` (timm's formula: the last block, the
  head, keeps the inner optimizer's rate).
- `discriminative(model, lr_range)`: learning rates spaced geometrically
  from `lr_range[0]` (first block) to `lr_range[1]` (last block), as
  multipliers of `lr_range[1]` (fastai's discriminative learning rates).

`warmup_steps=N` makes every block but the last ramp linearly from 0 to its
multiplier over the first `N` steps (a `LinearWarmup` schedule per rule).

Variables that fall in no block get no rule: they learn at the inner
optimizer's own rate, like the head (timm puts such parameters in the last
group too), and `summary()` shows them with `-` under "Rules".
"""

import numbers
import re

import keras

from layerwise.optim import rules as rules_lib
from layerwise._internals import models as internal_models
from layerwise.optim import schedules as schedules_lib
from layerwise.optim import selectors as selectors_lib

# A repeated block named with an index, e.g. keras-hub's `transformer_layer_3`.
_INDEXED_NAME = re.compile(r"(.+)_(\d+)")


# ----------------------------------------------------------------------
# Block detection.


def _trainable(layer):
    return bool(layer.trainable_variables)


def _indexed_family(layers):
    """The largest run of siblings named `<prefix>_0` ... `<prefix>_<n-1>`.

    Indices must start at 0 and be contiguous, which leaves Keras'
    automatic names (`dense`, `dense_1`, `dense_2`) out. Returns the layers
    sorted by index, or `[]`.
    """
    families = {}
    for layer in layers:
        match = _INDEXED_NAME.fullmatch(layer.name)
        if match:
            families.setdefault(match.group(1), []).append((int(match.group(2)), layer))
    best = []
    for members in families.values():
        members.sort(key=lambda item: item[0])
        contiguous = [i for i, _ in members] == list(range(len(members)))
        if contiguous and len(members) >= max(2, len(best) + 1):
            best = [layer for _, layer in members]
    return best


def _ordered_groups(model):
    """A model's direct sublayers as groups, input side first.

    `Sequential`: its layer order. Functional: one group per topological
    depth. Other models: tracking order, indexed siblings sorted by index.
    """
    layers = list(model.layers)
    if isinstance(model, keras.Sequential):
        groups = [[layer] for layer in layers]
    else:
        depths = internal_models.functional_depths(model)
        if depths is not None:
            by_depth = {}
            for layer in layers:
                by_depth.setdefault(depths[id(layer)], []).append(layer)
            groups = [by_depth[d] for d in sorted(by_depth, reverse=True)]
        else:
            family = _indexed_family(layers)
            slots = iter(family)
            family_ids = {id(layer) for layer in family}
            layers = [next(slots) if id(l) in family_ids else l for l in layers]
            groups = [[layer] for layer in layers]
    groups = [[layer for layer in group if _trainable(layer)] for group in groups]
    return [group for group in groups if group]


def _find_family(model):
    """The largest indexed family among the sublayers of `model` or of any
    model nested in it (see `_indexed_family`)."""
    best = _indexed_family(model.layers)
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            family = _find_family(layer)
            if len(family) > len(best):
                best = family
    return best


def _units(model, keep):
    """Ordered groups with nested models expanded in place (except `keep`)."""
    units = []
    for group in _ordered_groups(model):
        layer = group[0]
        if len(group) == 1 and isinstance(layer, keras.Model) and id(layer) not in keep:
            units.extend(_units(layer, keep))
        else:
            units.append(group)
    return units


def detect_blocks(model):
    """Splits a model into ordered blocks of layers, input side first.

    Each block is a list of layers; layers without trainable variables are
    left out. The order comes from the model's structure:

    - a `Sequential` model: its layers, one block each;
    - a Functional model: one block per topological depth (Keras' own
      depth, counted from the outputs), so parallel layers at one depth
      share a block;
    - nested models are expanded in place, recursively (a subclassed model
      contributes its sublayers in tracking order);
    - if the model, or a model nested in it, holds repeated blocks named
      with an index from 0 (`transformer_layer_0` ... `transformer_layer_<n>`,
      as in keras-hub backbones), each of those is one block, everything
      before the first one forms a single first block (embeddings) and
      everything after the last one a single last block (final norm and
      head). Keras' automatic names (`dense`, `dense_1`, ...) never start at
      `_0` and do not count.

    Args:
        model: A built `keras.Model`.

    Returns:
        A list of blocks, each a list of `keras.layers.Layer`; it is a valid
        `blocks` argument of `layer_decay` and `discriminative`.

    Example:

    >>> from layerwise.recipes.layer_decay import detect_blocks
    >>> model = keras.Sequential([
    ...     keras.Input((8,)),
    ...     keras.layers.Dense(8, name="d1"),
    ...     keras.layers.Dropout(0.1, name="drop"),
    ...     keras.layers.Dense(8, name="d2"),
    ...     keras.layers.Dense(2, name="head")])
    >>> [[layer.name for layer in block] for block in detect_blocks(model)]
    [['d1'], ['d2'], ['head']]
    """
    _check_model(model)
    family = _find_family(model)
    units = _units(model, {id(layer) for layer in family})
    members = {id(layer) for layer in family}
    with_member = [i for i, unit in enumerate(units) if any(id(l) in members for l in unit)]
    if not with_member:  # no repeated blocks, or all of them frozen
        return units
    before, middle, after = [], [], []
    for i, unit in enumerate(units):
        if i < with_member[0]:
            before.extend(unit)
        elif i > with_member[-1]:
            after.extend(unit)
        elif i in with_member or not middle:
            middle.append(list(unit))
        else:  # between two repeated blocks: goes with the one before
            middle[-1].extend(unit)
    return [b for b in [before] if b] + middle + [b for b in [after] if b]


# ----------------------------------------------------------------------
# Explicit blocks.


def _natural_key(groups):
    return tuple((0, int(g), "") if g and g.isdigit() else (1, 0, g or "") for g in groups)


def _resolve(model, blocks):
    """`blocks` as a list of (default name or None, selector, variables)."""
    variables = list(model.trainable_variables)
    paths = [v.path for v in variables]
    if blocks is None:
        return [
            (group[0].name if len(group) == 1 else None,
             selectors_lib.as_selector(group if len(group) > 1 else group[0]),
             [v for layer in group for v in layer.trainable_variables])
            for group in detect_blocks(model)
        ]
    if not isinstance(blocks, (list, tuple)) or not blocks:
        raise ValueError(
            "`blocks` must be a non-empty list of blocks (layers, regular "
            "expressions, variables, callables, or lists of these), input "
            f"side first. Received: blocks={blocks!r}"
        )
    resolved = []
    for index, spec in enumerate(blocks):
        if isinstance(spec, str) and selectors_lib.PathPattern(spec)._regex.groups:
            # timm's convention: one block per distinct captured value.
            regex = re.compile(spec)
            parts = {}
            for path in paths:
                match = regex.fullmatch(path)
                if match:
                    parts.setdefault(match.groups(), []).append(path)
            for key in sorted(parts, key=_natural_key):
                label = f"{spec!r} {'/'.join(g or '' for g in key)}"
                selector = selectors_lib.VariablePaths(parts[key], label=label)
                resolved.append((None, selector, [v for v in variables if v.path in parts[key]], index))
            if parts:
                continue
            selector, hits = selectors_lib.as_selector(spec), []
        else:
            if isinstance(spec, (list, tuple)) and not spec:
                raise ValueError(
                    f"`blocks[{index}]` must not be an empty list. Received: "
                    f"blocks[{index}]=[]"
                )
            selector = selectors_lib.as_selector(spec)
            hits = [v for v in variables if selector.matches(v)]
        if not hits:
            sample = paths[:8] + (["..."] if len(paths) > 8 else [])
            raise ValueError(
                f"`blocks[{index}]` must select at least one trainable variable "
                f"of the model. Received: blocks[{index}]={spec!r}, which "
                f"matches none of {sample}"
            )
        layer = spec[0] if isinstance(spec, (list, tuple)) and len(spec) == 1 else spec
        name = layer.name if isinstance(layer, keras.layers.Layer) else None
        resolved.append((name, selector, hits, index))
    owner = {}
    for _, _, hits, index in resolved:
        for v in hits:
            if id(v) in owner and owner[id(v)] != index:
                raise ValueError(
                    "`blocks` must not overlap: variable "
                    f"{v.path!r} is selected by blocks[{owner[id(v)]}] and "
                    f"blocks[{index}]. Received: blocks={blocks!r}"
                )
            owner[id(v)] = index
    return [r[:3] for r in resolved]


# ----------------------------------------------------------------------
# Recipes.


def _check_model(model):
    if not isinstance(model, keras.Model):
        raise TypeError(f"`model` must be a `keras.Model`. Received: model={model!r}")
    if not model.built:
        raise ValueError(
            "`model` must be built, so that its variables exist: create it "
            "from a `keras.Input`, call it on a batch, or call "
            f"`model.build(input_shape)` first. Received: model={model.name!r} "
            "(not built)"
        )
    if not model.trainable_variables:
        raise ValueError(
            "`model` must have trainable variables. Received: "
            f"model={model.name!r} with none"
        )


def _make_rules(resolved, scales, warmup_steps):
    names = [name or f"block_{i}" for i, (name, _, _) in enumerate(resolved)]
    names = [
        f"block_{i}" if names.count(name) > 1 else name for i, name in enumerate(names)
    ]
    last = len(resolved) - 1
    rules = []
    for i, ((_, selector, _), name, scale) in enumerate(zip(resolved, names, scales)):
        if warmup_steps is not None and i < last:
            scale = schedules_lib.LinearWarmup(scale, warmup_steps)
        rules.append(rules_lib.Rule(selector, lr_scale=scale, name=name))
    return rules


def layer_decay(model, decay, *, blocks=None, warmup_steps=None):
    """Layer-wise learning-rate decay: each block slower than the next.

    Block `i` of `L` (0 = closest to the input) gets
    `lr_scale = decay ** (L - 1 - i)`, the formula of timm's
    `param_groups_layer_decay`: the last block (the head) keeps the inner
    optimizer's learning rate, the one below it `decay` times that, and so
    on. Variables in no block get no rule, so they learn at the inner
    optimizer's rate.

    Args:
        model: A built `keras.Model`.
        decay: The ratio between consecutive blocks, a number in (0, 1].
        blocks: Optional explicit blocks, input side first; always wins over
            detection. Each entry is anything a `Rule` accepts as `match`: a
            layer, a `keras.Variable`, a callable, a list of these, or a
            regular expression `re.fullmatch`ed against `variable.path`. A
            regular expression with capture groups is split into one block
            per distinct captured value, in natural order (timm's
            convention): `r"encoder/layer_(\\d+)/.*"` gives one block per
            layer. Blocks must not overlap and must each select a
            trainable variable. By default, `detect_blocks(model)`.
        warmup_steps: Optional integer >= 1: every block but the last ramps
            linearly from 0 to its multiplier over this many steps (its
            `lr_scale` is a `LinearWarmup`); the last block starts at once.

    Returns:
        A list of `Rule`s, one per block, input side first, named after the
        block's layer (`"conv1"`) or `"block_<i>"`.

    Example:

    >>> from layerwise.recipes.layer_decay import layer_decay
    >>> model = keras.Sequential([
    ...     keras.Input((8,)),
    ...     keras.layers.Dense(8, name="d1"),
    ...     keras.layers.Dense(8, name="d2"),
    ...     keras.layers.Dense(2, name="head")])
    >>> for rule in layer_decay(model, decay=0.5):
    ...     print(rule)
    Rule(layer 'd1', lr_scale=0.25, name='d1')
    Rule(layer 'd2', lr_scale=0.5, name='d2')
    Rule(layer 'head', lr_scale=1.0, name='head')
    >>> opt = lw.LayerwiseOptimizer(keras.optimizers.AdamW(1e-3),
    ...                             rules=layer_decay(model, decay=0.5))
    """
    if not isinstance(decay, numbers.Real) or isinstance(decay, bool) or not 0 < decay <= 1:
        raise ValueError(
            f"`decay` must be a number in (0, 1]. Received: decay={decay!r}"
        )
    _check_model(model)
    if warmup_steps is not None:
        schedules_lib._check_steps(warmup_steps, "warmup_steps")
    resolved = _resolve(model, blocks)
    n = len(resolved)
    scales = [float(decay) ** (n - 1 - i) for i in range(n)]
    return _make_rules(resolved, scales, warmup_steps)


def discriminative(model, lr_range, *, blocks=None, warmup_steps=None):
    """Discriminative learning rates, spaced geometrically over the blocks.

    Block `i` of `L` (0 = closest to the input) learns at
    `lr_i = low * (high / low) ** (i / (L - 1))`, so the first block learns
    at `low` and the last at `high` (fastai's `slice(low, high)`). The rules
    carry these rates as multipliers of `high`:
    `lr_scale_i = lr_i / high`. Give the inner optimizer the learning rate
    `high` to get exactly `lr_range`; with another base rate `base`, block
    `i` learns at `base * lr_i / high`. This is `layer_decay` with
    `decay = (low / high) ** (1 / (L - 1))`. A single block gets 1.0.

    Args:
        model: A built `keras.Model`.
        lr_range: `(low, high)`, with `0 < low <= high`: the learning rates
            of the first and the last block.
        blocks: Optional explicit blocks, as in `layer_decay`.
        warmup_steps: Optional warm-up of every block but the last, as in
            `layer_decay`.

    Returns:
        A list of `Rule`s, one per block, input side first.

    Example:

    >>> from layerwise.recipes.layer_decay import discriminative
    >>> model = keras.Sequential([
    ...     keras.Input((8,)),
    ...     keras.layers.Dense(8, name="d1"),
    ...     keras.layers.Dense(8, name="d2"),
    ...     keras.layers.Dense(2, name="head")])
    >>> rules = discriminative(model, lr_range=(1e-5, 1e-3))
    >>> [round(rule.lr_scale, 6) for rule in rules]
    [0.01, 0.1, 1.0]
    >>> opt = lw.LayerwiseOptimizer(keras.optimizers.Adam(1e-3), rules)
    """
    if (
        not isinstance(lr_range, (list, tuple))
        or len(lr_range) != 2
        or not all(
            isinstance(x, numbers.Real) and not isinstance(x, bool) for x in lr_range
        )
        or not 0 < lr_range[0] <= lr_range[1] < float("inf")
    ):
        raise ValueError(
            "`lr_range` must be a pair `(low, high)` of finite numbers with "
            f"0 < low <= high. Received: lr_range={lr_range!r}"
        )
    _check_model(model)
    if warmup_steps is not None:
        schedules_lib._check_steps(warmup_steps, "warmup_steps")
    resolved = _resolve(model, blocks)
    n = len(resolved)
    low, high = float(lr_range[0]), float(lr_range[1])
    if n == 1:
        scales = [1.0]
    else:
        scales = [(low / high) ** ((n - 1 - i) / (n - 1)) for i in range(n)]
    return _make_rules(resolved, scales, warmup_steps)
