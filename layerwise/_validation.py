"""Argument checks shared by rules, transforms and the optimizer.

Every message follows Keras' form: "`arg` must be X. Received: arg=value".
"""

import inspect
import math
import numbers


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
