"""Checks of user functions' outputs, on symbolic tensors (shapes and
dtypes only) or at trace time.

Update transforms and projections run after the optimizer's update has
landed, so a wrong return value found in the step would leave changed
state behind. `keras.KerasTensor`s let the optimizer's `build` run them on
shapes and dtypes alone, on every backend, before any state exists. The
gradient hook and gradient transforms are checked the same way (`checked`)
when the step is traced, before their gradients reach an update.
"""

import collections.abc

import keras
from keras import ops

# What `call` returns for a function that cannot run symbolically (it
# needs concrete values): such a function is left to the step.
UNKNOWN = object()


class InvalidOutputError(TypeError, ValueError):
    """A gradient hook, a gradient or update transform or a projection
    returned something other than one tensor of the right shape and dtype
    per variable."""


def like(variable):
    """A symbolic tensor of `variable`'s shape and dtype."""
    return keras.KerasTensor(tuple(variable.shape), variable.dtype)


def scalar(dtype="float32"):
    return keras.KerasTensor((), dtype)


def call(fn, *args):
    """`fn(*args)`, or `UNKNOWN` if `fn` cannot run on symbolic tensors."""
    try:
        return fn(*args)
    except InvalidOutputError:
        raise
    except Exception:
        return UNKNOWN


def checked(new, old, variables, what, noun):
    """`new` as a list, checked against `old` (same length, shapes and
    dtypes).

    Args:
        new: What the user's function returned.
        old: What it was given: one tensor per variable.
        variables: The variables, for the message.
        what: The function, as the message names it.
        noun: What the tensors are, plural (`"gradients"`, `"updates"`).

    Returns:
        `new` as a list.

    Raises:
        InvalidOutputError: naming `what` and, for a wrong shape or dtype,
            the variable.
    """
    if new is None or ops.is_tensor(new) or isinstance(new, keras.KerasTensor) or not isinstance(
        new, collections.abc.Iterable
    ):
        raise InvalidOutputError(
            f"{what} must return a list of {noun}, one per variable. Received: {new!r}"
        )
    new = list(new)
    if len(new) != len(old):
        raise InvalidOutputError(
            f"{what} must return {noun}, one per variable. Expected "
            f"{len(old)}, received {len(new)}."
        )
    for n, o, variable in zip(new, old, variables):
        check_one(n, o, variable, what)
    return new


def check_one(new, old, variable, what):
    """Raises `InvalidOutputError` unless `new` has `old`'s shape and dtype."""
    shape = getattr(new, "shape", None)
    shape = None if shape is None else tuple(shape)
    if shape != tuple(old.shape):
        raise InvalidOutputError(
            f"{what} must keep the variables' shapes. For variable "
            f"{variable.path!r} expected shape {tuple(old.shape)}, received {shape}."
        )
    if keras.backend.standardize_dtype(new.dtype) != keras.backend.standardize_dtype(old.dtype):
        raise InvalidOutputError(
            f"{what} must keep the variables' dtype. For variable "
            f"{variable.path!r} expected {old.dtype}, received {new.dtype}."
        )
