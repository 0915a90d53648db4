"""Argument checks shared by rules, transforms and the optimizer.

Every message follows Keras' form: "`arg` must be X. Received: arg=value".
"""

import inspect
import math
import numbers

import keras


def check_arity(fn, n_args, arg_name):
    """Fails early if `fn` cannot be called with `n_args` positional args."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # Builtins without a signature: trust the caller.
    try:
        signature.bind(*([None] * n_args))
    except TypeError:
        raise TypeError(
            f"`{arg_name}` must be a callable taking {n_args} positional "
            f"argument(s). Received: {arg_name}={fn!r} with signature "
            f"{signature}"
        ) from None


def is_function(value):
    """Whether `value` can stand for a user function: callable, and not a
    class (a transform class given for its instance is a mistake)."""
    return callable(value) and not isinstance(value, type)


def check_function(fn, n_args, arg_name, signature):
    """Returns `fn`, or raises unless it is a function (see `is_function`)
    callable with `n_args` positional arguments.

    Args:
        fn: The user's function.
        n_args: How many positional arguments it is called with.
        arg_name: The argument's name in the message.
        signature: What it computes, for the message, e.g.
            `"(gradient, variable) -> gradient"`.

    Returns:
        `fn`.
    """
    if not is_function(fn):
        raise TypeError(
            f"`{arg_name}` must be a callable `{signature}`. "
            f"Received: {arg_name}={fn!r}"
        )
    check_arity(fn, n_args, arg_name)
    return fn


def is_real_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


# Multipliers and decay rates are stored as float32 variables: a larger
# Python float would silently become inf there.
_FLOAT32_MAX = 3.4028234663852886e38


def check_nonnegative_finite(value, arg_name):
    """Returns `value` as a float, or raises if negative or non-finite (also
    once stored in float32)."""
    if not is_real_number(value) or not math.isfinite(value) or value < 0:
        raise ValueError(
            f"`{arg_name}` must be a finite number >= 0. "
            f"Received: {arg_name}={value!r}"
        )
    if value > _FLOAT32_MAX:
        raise ValueError(
            f"`{arg_name}` must be a finite number >= 0. Received: "
            f"{arg_name}={value!r}, which is inf in float32, the dtype it is "
            "stored in"
        )
    return float(value)


def check_positive_finite(value, arg_name):
    if not is_real_number(value) or not math.isfinite(value) or value <= 0:
        raise ValueError(
            f"`{arg_name}` must be a finite number > 0. "
            f"Received: {arg_name}={value!r}"
        )
    return float(value)


def variable_name(text):
    """`text` with only the characters Keras allows in variable names."""
    return "".join(c if c.isalnum() or c in "_-." else "_" for c in text)


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_axis(value, arg_name="axis"):
    """`None`, or `value` as a tuple of distinct ints (one int is one axis).

    Negative axes count from the end; whether they exist is only known for
    a given tensor (see `resolve_axes`).
    """
    if value is None:
        return None
    axes = (value,) if _is_int(value) else value
    if (
        not isinstance(axes, (tuple, list))
        or not axes
        or not all(_is_int(a) for a in axes)
        or len(set(axes)) != len(axes)
    ):
        raise ValueError(
            f"`{arg_name}` must be None, an int or a non-empty tuple of "
            f"distinct ints. Received: {arg_name}={value!r}"
        )
    return tuple(int(a) for a in axes)


def resolve_axes(axes, rank, variable, arg_name="axis"):
    """`axes` as sorted non-negative axes of a tensor of `rank`.

    Raises a `ValueError` naming `variable` (its path) if an axis does not
    exist at that rank or two axes are the same one.
    """
    resolved = [a + rank if a < 0 else a for a in axes]
    if not all(0 <= a < rank for a in resolved) or len(set(resolved)) != len(resolved):
        raise ValueError(
            f"`{arg_name}` must name distinct axes of every variable it is "
            f"applied to. Received: {arg_name}={axes!r} for variable "
            f"{variable.path!r} of shape {tuple(variable.shape)} (rank {rank})"
        )
    return tuple(sorted(resolved))


def check_model(model):
    """Fails unless `model` is a built `keras.Model` with trainable variables."""
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
