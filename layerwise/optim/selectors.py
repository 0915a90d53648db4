"""Selectors: which variables a rule applies to.

A rule's `match` may be a Keras layer, a `keras.Variable`, a regular
expression on `variable.path`, a predicate `variable -> bool`, or a list or
tuple of these. `as_selector` turns any of them into a `Selector`, a small
serializable object with one method, `matches(variable)`.

Layers and variables serialize as the exact list of variable paths they
select, so a saved rule re-binds to the same variables of a reloaded model.
"""

import re

import keras

from layerwise import _validation
from layerwise.optim import plan as plan_lib

_PACKAGE = "layerwise"


class Selector:
    """Base class: decides whether a rule applies to a variable."""

    def matches(self, variable):
        raise NotImplementedError

    def describe(self):
        """A short human-readable description, used by `summary()`."""
        raise NotImplementedError

    def get_config(self):
        raise NotImplementedError

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def saveable(self):
        """The selector to save in place of this one (itself by default)."""
        return self

    def bind(self, paths):
        """Adapts to the variable paths of the model being built (called
        once per build, before matching; nothing to do by default)."""

    def untrainable_paths(self):
        """Paths of the variables this selector names that are marked
        `trainable=False` (no optimizer is built on them): why a rule may
        match nothing. Only selectors holding layers or variables know."""
        return []

    def __repr__(self):
        return f"{type(self).__name__}({self.describe()})"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PathPattern(Selector):
    """Matches variables whose `path` fully matches a regular expression.

    `re.fullmatch` is the convention of Keras' own `OptimizerMap`: the
    pattern `"encoder/.*"` selects `encoder/dense/kernel` but not
    `pre_encoder/dense/kernel`.

    Args:
        pattern: A regular expression string.
    """

    def __init__(self, pattern):
        if not isinstance(pattern, str):
            raise TypeError(
                "`pattern` must be a string. "
                f"Received: pattern={pattern!r}"
            )
        try:
            self._regex = re.compile(pattern)
        except re.error as e:
            raise ValueError(
                "`match` must be a valid regular expression. "
                f"Received: match={pattern!r} ({e})"
            ) from None
        self.pattern = pattern

    def matches(self, variable):
        return self._regex.fullmatch(plan_lib.path_of(variable)) is not None

    def describe(self):
        return repr(self.pattern)

    def get_config(self):
        return {"pattern": self.pattern}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class VariablePaths(Selector):
    """Matches the variables with exactly these paths.

    This is what a layer or variable selector is saved as.

    Args:
        paths: A list of variable paths.
        label: Optional text shown by `summary()` (e.g. the layer's name).
    """

    def __init__(self, paths, label=None):
        self.paths = tuple(paths)
        self._path_set = frozenset(self.paths)
        self.label = label

    def matches(self, variable):
        return plan_lib.path_of(variable) in self._path_set

    def bind(self, paths):
        """Follows a saved path to the model's variable when Keras scoped
        it differently, exact paths first.

        A `Sequential` model given an `Input` builds its layers inside its
        own name scope (`sequential/dense/kernel`), while the same model
        reloaded by `keras.models.load_model` does not (`dense/kernel`),
        and the reverse happens when a loaded model's rules are applied to
        a freshly built copy. A saved path absent from `paths` therefore
        also matches the one model path that differs from it by exactly a
        leading scope, and only if exactly one does.
        """
        present = frozenset(paths)
        by_tail = {}
        for path in present:
            if "/" in path:
                by_tail.setdefault(path.split("/", 1)[1], []).append(path)
        aliases = set()
        for saved in self.paths:
            if saved in present:
                continue
            candidates = list(by_tail.get(saved, ()))
            if "/" in saved and saved.split("/", 1)[1] in present:
                candidates.append(saved.split("/", 1)[1])
            if len(candidates) == 1:
                aliases.add(candidates[0])
        self._path_set = frozenset(self.paths) | aliases

    def describe(self):
        return self.label or f"{len(self.paths)} paths"

    def get_config(self):
        return {"paths": list(self.paths), "label": self.label}


class LayerSelector(Selector):
    """Matches every variable of a layer, nested layers included.

    The layer's variables are looked up when matching, so a rule may be
    written before the layer is built.
    """

    def __init__(self, layer):
        self.layer = layer

    def matches(self, variable):
        return any(variable is v for v in self.layer.variables)

    def untrainable_paths(self):
        return [v.path for v in self.layer.variables if not v.trainable]

    def describe(self):
        return f"layer {self.layer.name!r}"

    def saveable(self):
        return VariablePaths(
            [v.path for v in self.layer.variables], label=self.describe()
        )


class VariableSelector(Selector):
    """Matches one `keras.Variable` (by identity)."""

    def __init__(self, variable):
        self.variable = variable

    def matches(self, variable):
        return variable is self.variable

    def untrainable_paths(self):
        return [] if self.variable.trainable else [self.variable.path]

    def describe(self):
        return f"variable {self.variable.path!r}"

    def saveable(self):
        return VariablePaths([self.variable.path], label=self.describe())


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Predicate(Selector):
    """Matches variables for which `fn(variable)` is true.

    Args:
        fn: A callable `variable -> bool`. To save a model whose optimizer
            uses it, register it with
            `keras.saving.register_keras_serializable`; a lambda is saved as
            bytecode and refused by `keras.models.load_model` under
            `safe_mode=True`.
    """

    def __init__(self, fn):
        if not callable(fn):
            raise TypeError(
                f"`fn` must be callable. Received: fn={fn!r}"
            )
        self.fn = fn

    def matches(self, variable):
        result = self.fn(variable)
        if not isinstance(result, bool):
            # numpy/tensor booleans are fine; anything else is a bug in the
            # predicate that would silently select by truthiness.
            try:
                result = bool(result)
            except Exception:
                raise TypeError(
                    "A `match` predicate must return a bool. Received: "
                    f"{result!r} for variable {variable.path!r}"
                ) from None
        return result

    def describe(self):
        return getattr(self.fn, "__name__", type(self.fn).__name__)

    def get_config(self):
        return {"fn": keras.saving.serialize_keras_object(self.fn)}

    @classmethod
    def from_config(cls, config):
        fn = keras.saving.deserialize_keras_object(config["fn"])
        return cls(fn)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class AnyOf(Selector):
    """Matches variables matched by any of several selectors."""

    def __init__(self, selectors):
        self.selectors = tuple(as_selector(s) for s in selectors)

    def matches(self, variable):
        return any(s.matches(variable) for s in self.selectors)

    def bind(self, paths):
        for selector in self.selectors:
            selector.bind(paths)

    def untrainable_paths(self):
        return [p for s in self.selectors for p in s.untrainable_paths()]

    def describe(self):
        return " | ".join(s.describe() for s in self.selectors)

    def get_config(self):
        return {"selectors": [serialize_selector(s) for s in self.selectors]}

    @classmethod
    def from_config(cls, config):
        return cls(
            [deserialize_selector(c) for c in config["selectors"]]
        )


def as_selector(match):
    """Turns any accepted `match` value into a `Selector`.

    Args:
        match: A `keras.layers.Layer`, a `keras.Variable`, a regular
            expression string (`re.fullmatch` on `variable.path`), a callable
            `variable -> bool`, a `Selector`, or a list/tuple of these.

    Returns:
        A `Selector`.
    """
    if isinstance(match, Selector):
        return match
    # A Layer is callable: test it before the generic callable case.
    if isinstance(match, keras.layers.Layer):
        return LayerSelector(match)
    if isinstance(match, keras.Variable):
        return VariableSelector(match)
    if isinstance(match, str):
        return PathPattern(match)
    if isinstance(match, (list, tuple)):
        if not match:
            raise ValueError(
                "`match` must not be an empty list. Received: match=[]"
            )
        return AnyOf(match)
    if callable(match):
        _validation.check_arity(match, 1, "match")
        return Predicate(match)
    raise TypeError(
        "`match` must be a keras Layer, a keras.Variable, a regular "
        "expression string, a callable `variable -> bool`, or a list of "
        f"these. Received: match={match!r} of type {type(match).__name__}"
    )


def serialize_selector(selector):
    selector = selector.saveable()
    return {
        "class_name": keras.saving.get_registered_name(type(selector)),
        "config": selector.get_config(),
    }


def deserialize_selector(config):
    cls = keras.saving.get_registered_object(config["class_name"])
    if cls is None:
        raise ValueError(
            "Unknown selector class in a saved rule. Received: "
            f"class_name={config['class_name']!r}"
        )
    return cls.from_config(config["config"])
