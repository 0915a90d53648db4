"""Loads Keras' own optimizer tests with every optimizer class wrapped.

Each Keras test file under `keras/src/optimizers/` (shipped in the wheel) is
executed afresh, once per variant, as a private module whose imports go
through a hook (its own `__builtins__.__import__`): any `keras` module the
test file imports on the way to an optimizer class is replaced, in that
module only, by a read-through proxy in which each built-in optimizer class
(`Adam`, `SGD`, ..., found in `keras.src.optimizers.*`) is a
`WrappedOptimizerClass`. Calling one builds the plain optimizer with the
same arguments and returns `layerwise.LayerwiseOptimizer(plain, ...)`;
`isinstance`, `issubclass` and `from_config` go through the wrapper too, and
the proxies' `get` and `deserialize` wrap a plain optimizer they create.
Keras itself is not patched: everything outside these modules sees real
Keras, and Keras' own code inside them runs unchanged.

`LossScaleOptimizer` and `MultiOptimizer` are wrappers themselves and stay
real: the optimizers a test hands them are wrapped
(`LossScaleOptimizer(LayerwiseOptimizer(SGD))`, the order the
`LayerwiseOptimizer` documentation prescribes). Optimizer classes a test
file defines itself (`ScatterUpdateOptimizer` in `optimizer_sparse_test.py`)
are not Keras' and run as written.
"""

import builtins
import dataclasses
import importlib
import importlib.util
import inspect
import pathlib
import pkgutil
import sys
import types
import unittest
import weakref

from keras.src import optimizers as keras_optimizers
from keras.src.optimizers import optimizer as keras_optimizer_module

import layerwise

KERAS_OPTIMIZERS_DIR = pathlib.Path(keras_optimizers.__file__).parent

# Keras classes that are not an update rule: the base class, and the two
# wrappers whose inner optimizers are wrapped instead.
_NOT_WRAPPED = (
    keras_optimizer_module.Optimizer,
    keras_optimizers.LossScaleOptimizer,
    keras_optimizers.MultiOptimizer,
)


def _optimizer_classes():
    """Every optimizer class defined in a `keras.src.optimizers` module."""
    classes = set()
    for info in pkgutil.iter_modules([str(KERAS_OPTIMIZERS_DIR)]):
        if info.ispkg or info.name.endswith("_test"):
            continue
        module = importlib.import_module(f"keras.src.optimizers.{info.name}")
        for obj in vars(module).values():
            if (
                inspect.isclass(obj)
                and obj.__module__ == module.__name__
                and issubclass(obj, keras_optimizer_module.Optimizer)
                and obj not in _NOT_WRAPPED
            ):
                classes.add(obj)
    return frozenset(classes)


WRAPPED_CLASSES = _optimizer_classes()


def keras_test_files():
    """Keras' optimizer test files, in name order."""
    return sorted(KERAS_OPTIMIZERS_DIR.glob("*_test.py"))


@dataclasses.dataclass(frozen=True)
class Variant:
    """How a plain optimizer is wrapped."""

    id: str
    rules: tuple = ()
    strict: bool = True

    def wrap(self, plain):
        optimizer = layerwise.LayerwiseOptimizer(
            plain, rules=list(self.rules), strict=self.strict
        )
        _created.append((self, weakref.ref(optimizer)))
        return optimizer


# (variant, weak reference) of each wrapper built since `forget_created()`.
_created = []


def forget_created():
    _created.clear()


def unmatched_variables():
    """Paths of variables that wrappers built since `forget_created()`, in a
    variant with rules, were built on but that no rule matched."""
    unmatched = []
    for variant, ref in _created:
        optimizer = ref()
        if not variant.rules or optimizer is None or not optimizer.built:
            continue
        unmatched += [
            getattr(p.variable, "path", p.variable.name)
            for p in optimizer.plan.variables
            if not p.rules
        ]
    return unmatched


VARIANTS = (
    Variant("no_rules"),
    # A rule matching every variable, with a neutral multiplier: the update
    # goes through the rule machinery (a scale variable, one group). Not
    # strict: some tests build on no variable at all.
    Variant(
        "catch_all",
        rules=(layerwise.Rule(".*", lr_scale=1.0, name="all"),),
        strict=False,
    ),
)


def wrap_if_plain(variant, obj):
    """`obj` wrapped if it is a plain built-in optimizer, else `obj`.

    An instance test, not a type test: on torch, Keras builds optimizers of
    backend subclasses (`keras.src.backend.torch.optimizers.torch_adam.Adam`).
    """
    if isinstance(obj, tuple(WRAPPED_CLASSES)):
        return variant.wrap(obj)
    return obj


class WrappedOptimizerClass:
    """Stands for a Keras optimizer class inside a loaded test module.

    Calling it builds the plain optimizer, then wraps it. An object is an
    instance of it if it is a `LayerwiseOptimizer` whose inner optimizer is
    an instance of the Keras class (or a plain instance of that class).
    """

    def __init__(self, cls, variant):
        self.keras_class = cls
        self.variant = variant
        self.__name__ = cls.__name__
        self.__qualname__ = cls.__qualname__
        self.__module__ = cls.__module__
        self.__doc__ = cls.__doc__

    def __call__(self, *args, **kwargs):
        return self.variant.wrap(self.keras_class(*args, **kwargs))

    def from_config(self, config, custom_objects=None):
        if "optimizer" in config and "rules" in config:
            return layerwise.LayerwiseOptimizer.from_config(config, custom_objects)
        return self.variant.wrap(self.keras_class.from_config(config, custom_objects))

    def __instancecheck__(self, obj):
        if isinstance(obj, layerwise.LayerwiseOptimizer):
            obj = obj.inner_optimizer
        return isinstance(obj, self.keras_class)

    def __subclasscheck__(self, cls):
        return issubclass(cls, self.keras_class)

    def __getattr__(self, name):
        if name == "keras_class":  # Not set yet (copy, pickle).
            raise AttributeError(name)
        return getattr(self.keras_class, name)

    def __repr__(self):
        return f"<wrapped {self.keras_class.__name__} ({self.variant.id})>"


# The Keras packages holding optimizer classes (public and private API).
_OPTIMIZER_PACKAGES = (
    "keras.optimizers",
    "keras.api.optimizers",
    "keras.src.optimizers",
)
_MODULE_ATTRIBUTES = ("__file__", "__path__", "__package__", "__spec__", "__loader__")


def _is_on_optimizer_path(name):
    """Whether module `name` leads to, or is, a Keras optimizer module."""
    return name in ("keras", "keras.src", "keras.api") or any(
        name == p or name.startswith(p + ".") for p in _OPTIMIZER_PACKAGES
    )


class ModuleProxy(types.ModuleType):
    """A Keras module as seen from a loaded test module: attributes read
    through, optimizer classes (and modules leading to them) substituted."""

    def __init__(self, real, substitute):
        super().__init__(real.__name__, real.__doc__)
        for attribute in _MODULE_ATTRIBUTES:
            if hasattr(real, attribute):
                object.__setattr__(self, attribute, getattr(real, attribute))
        object.__setattr__(self, "_real", real)
        object.__setattr__(self, "_substitute", substitute)

    def __getattr__(self, name):
        value = getattr(self._real, name)
        return self._substitute(value, owner=self._real, name=name)

    def __dir__(self):
        return dir(self._real)

    def __repr__(self):
        return f"<proxy of {self._real!r}>"


class Namespace:
    """The substitutions of one variant: proxies, factories, `get`."""

    def __init__(self, variant):
        self.variant = variant
        self._proxies = {}
        self._factories = {
            cls: WrappedOptimizerClass(cls, variant) for cls in WRAPPED_CLASSES
        }

    def substitute(self, value, owner=None, name=None):
        if isinstance(value, types.ModuleType):
            if not _is_on_optimizer_path(value.__name__):
                return value
            if value.__name__ not in self._proxies:
                self._proxies[value.__name__] = ModuleProxy(value, self.substitute)
            return self._proxies[value.__name__]
        if inspect.isclass(value) and value in self._factories:
            return self._factories[value]
        if (
            owner is not None
            and owner.__name__ in _OPTIMIZER_PACKAGES
            and name in ("get", "deserialize")
        ):
            return self._wrapping(value)
        return value

    def _wrapping(self, function):
        def wrapped(*args, **kwargs):
            return wrap_if_plain(self.variant, function(*args, **kwargs))

        wrapped.__name__ = function.__name__
        wrapped.__doc__ = function.__doc__
        return wrapped

    def importer(self, name, globals=None, locals=None, fromlist=(), level=0):
        """`__import__` for a loaded test module."""
        module = builtins.__import__(name, globals, locals, fromlist, level)
        return self.substitute(module)


def load(path, variant):
    """Executes Keras test file `path` as a fresh module seeing `variant`."""
    namespace = Namespace(variant)
    module_name = f"_layerwise_peer__{variant.id}__{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    module.__builtins__ = {**vars(builtins), "__import__": namespace.importer}
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


def case_classes(module):
    """The `unittest.TestCase` classes `module` defines, by name."""
    return {
        name: obj
        for name, obj in vars(module).items()
        if inspect.isclass(obj)
        and issubclass(obj, unittest.TestCase)
        and obj.__module__ == module.__name__
    }


def case_method_names(cls):
    """The test methods unittest (and pytest) run on `cls`."""
    return unittest.TestLoader().getTestCaseNames(cls)
