"""How the transforms are saved: by their constructor's arguments.

Gradient transforms, update transforms and the wrappers of plain functions
(projections included) go into `.keras` files as Keras objects: a class
registered with `keras.saving.register_keras_serializable(package=
"layerwise")` and the config its constructor takes back. `Transform` is
that contract for classes whose arguments are plain values;
`WrapsFunction` for the wrappers of one user function, saved by the name
it was registered under.

Example:

>>> import keras, layerwise as lw
>>> config = keras.saving.serialize_keras_object(lw.clip_update(0.5))
>>> keras.saving.deserialize_keras_object(config)
ClipUpdate(max_norm=0.5)
"""

import keras

from layerwise import _validation


def describe(obj):
    """`ClassName(arg=value, ...)` from `obj.get_config()`."""
    args = ", ".join(f"{k}={v!r}" for k, v in obj.get_config().items())
    return f"{type(obj).__name__}({args})"


class Transform:
    """Base of the transforms saved by their constructor's arguments.

    Subclasses keep each argument as an attribute, return them from
    `get_config()` (none by default) and are registered with
    `keras.saving.register_keras_serializable`; `from_config` calls the
    constructor with the config, and the repr shows it.
    """

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return describe(self)


class WrapsFunction:
    """Mixin of the wrappers of one plain function, `self.fn`.

    The function is checked when wrapped (callable, not a class, taking
    `n_args` positional arguments) and saved by its registered name: it must
    be registered with `keras.saving.register_keras_serializable` to be
    saved; lambdas are refused at load under `safe_mode=True`.

    Subclasses set the class attributes `n_args`, `signature` (what the
    function computes, for error messages), `arg_name` (the argument's
    name in them) and `factory` (the name the repr shows).
    """

    n_args = None
    signature = None
    arg_name = None
    factory = None

    def __init__(self, fn):
        self.fn = _validation.check_function(fn, self.n_args, self.arg_name, self.signature)

    def get_config(self):
        return {"fn": keras.saving.serialize_keras_object(self.fn)}

    @classmethod
    def from_config(cls, config):
        return cls(keras.saving.deserialize_keras_object(config["fn"]))

    def __repr__(self):
        return f"{self.factory}({getattr(self.fn, '__name__', self.fn)!r})"
