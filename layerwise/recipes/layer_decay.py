"""Fine-tuning recipes: layer-wise learning-rate decay and discriminative rates.

Both recipes split a model into an ordered list of *blocks*, input side
first, and return one plain `Rule` per block, to print, edit and combine
with other rules before passing them to `LayerwiseOptimizer`:

- `layer_decay(model, decay)`: block `i` of `L` gets
  `lr_scale = max(min_scale, decay ** (L - 1 - i))` (timm's formula: the
  last block, the head, keeps the inner optimizer's rate), blocks below
  `no_opt_scale` frozen.
- `discriminative(model, lr_range)`: learning rates spaced geometrically
  from `lr_range[0]` (first block) to `lr_range[1]` (last block), as
  multipliers of `lr_range[1]` (fastai's discriminative learning rates).

`warmup_steps=N` makes every block but the last ramp linearly from 0 to its
multiplier over the first `N` steps (a `LinearWarmup` schedule per rule).

The blocks come from `detect_blocks` (`blocks.py`) unless given.
Variables that fall in no block get no rule: they learn at the inner
optimizer's own rate, like the head (timm puts such parameters in the last
group too), and `summary()` shows them with `-` under "Rules".
"""

import numbers
import re
import warnings

import keras

from layerwise import _validation
from layerwise.optim import rules as rules_lib
from layerwise.optim import schedules as schedules_lib
from layerwise.optim import selectors as selectors_lib
from layerwise.recipes import blocks as blocks_lib
# Importable from here too, next to the recipes that use it.
from layerwise.recipes.blocks import detect_blocks  # noqa: F401

# Below this fraction of the base rate a block barely learns: warn.
_TINY_SCALE = 1e-3


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
            for group in blocks_lib.detect_blocks(model)
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


def _make_rules(resolved, scales, warmup_steps, frozen=None):
    names = [name or f"block_{i}" for i, (name, _, _) in enumerate(resolved)]
    names = [
        f"block_{i}" if names.count(name) > 1 else name for i, name in enumerate(names)
    ]
    frozen = frozen or [False] * len(resolved)
    last = len(resolved) - 1
    rules = []
    for i, ((_, selector, _), name, scale) in enumerate(zip(resolved, names, scales)):
        if frozen[i]:
            rules.append(rules_lib.Rule(selector, lr_scale=scale, frozen=True, name=name))
            continue
        if warmup_steps is not None and i < last:
            scale = schedules_lib.LinearWarmup(scale, warmup_steps)
        rules.append(rules_lib.Rule(selector, lr_scale=scale, name=name))
    return rules


def _check_fraction(value, arg_name):
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not 0 <= value <= 1:
        raise ValueError(
            f"`{arg_name}` must be a number in [0, 1]. Received: {arg_name}={value!r}"
        )
    return float(value)


def _warn_tiny_scales(rules, scales, frozen):
    tiny = [(scale, rule.name) for rule, scale, off in zip(rules, scales, frozen)
            if not off and scale < _TINY_SCALE]
    if not tiny:
        return
    smallest, smallest_name = min(tiny)
    names = [name for _, name in tiny]
    shown = ", ".join(names[:6]) + (f", ... ({len(names)} blocks)" if len(names) > 6 else "")
    warnings.warn(
        f"layer_decay gives {len(tiny)} of {len(rules)} blocks a learning rate "
        f"below {_TINY_SCALE:g} of the base rate, so they barely learn: {shown}; "
        f"the smallest multiplier is {smallest:.3g} ({smallest_name!r}). Pass "
        "`min_scale=` to floor the multipliers, `no_opt_scale=` to freeze "
        "those blocks instead, a `decay` closer to 1, or fewer, coarser "
        "`blocks=`.",
        stacklevel=3,
    )


def layer_decay(model, decay, *, blocks=None, warmup_steps=None, min_scale=0.0, no_opt_scale=None):
    """Layer-wise learning-rate decay: each block slower than the next.

    Block `i` of `L` (0 = closest to the input) gets
    `lr_scale = max(min_scale, decay ** (L - 1 - i))`, the formula of
    timm's `param_groups_layer_decay`: the last block (the head) keeps the
    inner optimizer's learning rate, the one below it `decay` times that,
    and so on. Variables in no block get no rule, so they learn at the inner
    optimizer's rate (timm puts them in the last group). A block whose
    multiplier is below `1e-3` warns, unless it is frozen by `no_opt_scale`.

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
        min_scale: A number in [0, 1], the floor of the multipliers (timm's
            `min_scale`). Defaults to 0 (no floor).
        no_opt_scale: Optional number in [0, 1] (timm's `no_opt_scale`):
            blocks whose multiplier, after `min_scale`, is below it are not
            optimized at all: their rule has `frozen=True`. `None` or 0:
            nothing is frozen.

    Returns:
        A list of `Rule`s, one per block, input side first, named after the
        block's layer (`"conv1"`) or `"block_<i>"`.

    Example:

    >>> model = keras.Sequential([
    ...     keras.Input((8,)),
    ...     keras.layers.Dense(8, name="d1"),
    ...     keras.layers.Dense(8, name="d2"),
    ...     keras.layers.Dense(2, name="head")])
    >>> for rule in lw.layer_decay(model, decay=0.5):
    ...     print(rule)
    Rule(layer 'd1', lr_scale=0.25, name='d1')
    Rule(layer 'd2', lr_scale=0.5, name='d2')
    Rule(layer 'head', lr_scale=1.0, name='head')
    >>> [r.lr_scale for r in lw.layer_decay(model, decay=0.5, min_scale=0.4)]
    [0.4, 0.5, 1.0]
    >>> [r.frozen for r in lw.layer_decay(model, decay=0.5, no_opt_scale=0.3)]
    [True, None, None]
    >>> opt = lw.LayerwiseOptimizer(keras.optimizers.AdamW(1e-3),
    ...                             rules=lw.layer_decay(model, decay=0.5))
    """
    if not isinstance(decay, numbers.Real) or isinstance(decay, bool) or not 0 < decay <= 1:
        raise ValueError(
            f"`decay` must be a number in (0, 1]. Received: decay={decay!r}"
        )
    min_scale = _check_fraction(min_scale, "min_scale")
    if no_opt_scale is not None:
        no_opt_scale = _check_fraction(no_opt_scale, "no_opt_scale")
    _validation.check_model(model)
    if warmup_steps is not None:
        schedules_lib._check_steps(warmup_steps, "warmup_steps")
    resolved = _resolve(model, blocks)
    n = len(resolved)
    scales = [max(min_scale, float(decay) ** (n - 1 - i)) for i in range(n)]
    # timm: `if no_opt_scale and this_scale < no_opt_scale` (0 turns it off).
    frozen = [bool(no_opt_scale) and scale < no_opt_scale for scale in scales]
    rules = _make_rules(resolved, scales, warmup_steps, frozen)
    _warn_tiny_scales(rules, scales, frozen)
    return rules


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

    The blocks are `layer_decay`'s (`detect_blocks` by default). There is no
    `min_scale` or `no_opt_scale` and no warning about small multipliers:
    `low` states the smallest rate outright, so it already is the floor;
    freeze blocks with a `Rule(..., frozen=True)` of your own.

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

    >>> model = keras.Sequential([
    ...     keras.Input((8,)),
    ...     keras.layers.Dense(8, name="d1"),
    ...     keras.layers.Dense(8, name="d2"),
    ...     keras.layers.Dense(2, name="head")])
    >>> rules = lw.discriminative(model, lr_range=(1e-5, 1e-3))
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
    _validation.check_model(model)
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
