"""Every reach into a layer's private machinery, in one place.

`parametrize` changes a layer that is already built, possibly inside a model
that is already built. Keras has no public API for that, so the few private
attributes it needs are touched only here, each behind a small function:

- `Layer._tracker` (`lock`, `unlock`, `untrack`): a built layer locks its
  tracker so that no variable or sublayer can be added by accident; Keras
  itself unlocks it the same way in `Layer.quantize` and `Dense.enable_lora`.
- `Layer._flatten_layers`: the layer and its sublayers (all, or the
  direct ones).
- Instance attributes that shadow methods (`call`): Keras itself installs
  `build` and `quantize` per instance in `Layer.__new__`; `Layer.__call__`
  reads `self.call`, so an instance attribute routes every call through it.

`tests/internals/test_layers.py` fails loudly if any of these moves.
"""

import contextlib

import keras

_MISSING = object()


@contextlib.contextmanager
def unlocked(layer):
    """Let `layer` track new variables and sublayers, then restore its lock."""
    tracker = layer._tracker
    was_locked = tracker.locked
    tracker.unlock()
    try:
        yield
    finally:
        if was_locked:
            tracker.lock()


def untrack(layer, sublayer):
    """Stop `layer` from counting `sublayer` (and its weights) as its own."""
    with unlocked(layer):
        layer._tracker.untrack(sublayer)


def flatten_layers(layer):
    """`layer` followed by all its sublayers, depth first, each once."""
    return layer._flatten_layers(include_self=True, recursive=True)


def attributes_holding(layer, value):
    """Names of `layer`'s instance attributes that hold `value` (by identity)."""
    return sorted(name for name, v in vars(layer).items() if v is value)


def own_variables(layer):
    """Variables held directly in `layer`'s instance attributes, by name."""
    found = {}
    for value in vars(layer).values():
        if isinstance(value, keras.Variable):
            found.setdefault(value.name, value)
    return found


@contextlib.contextmanager
def substituted(layer, values):
    """Temporarily set instance attributes of `layer`, bypassing tracking.

    Used inside `call`: the values are tensors computed from the weights, so
    they must not be tracked, and the original attributes come back even if
    the call raises.
    """
    saved = {name: vars(layer).get(name, _MISSING) for name in values}
    for name, value in values.items():
        object.__setattr__(layer, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is _MISSING:
                object.__delattr__(layer, name)
            else:
                object.__setattr__(layer, name, value)


def instance_override(layer, name):
    """The per-instance override of method `name`, or `None`."""
    value = vars(layer).get(name)
    return value


def set_instance_override(layer, name, function):
    """Route `layer.<name>(...)` through `function` for this instance only."""
    object.__setattr__(layer, name, function)


def clear_instance_override(layer, name):
    """Remove the per-instance override of method `name`."""
    object.__delattr__(layer, name)


def sublayers(layer):
    """The layers tracked directly by `layer` (not their own sublayers)."""
    return list(layer._flatten_layers(include_self=False, recursive=False))
