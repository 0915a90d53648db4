"""Gradient transforms: small serializable callables applied before an update.

One protocol: a transform is called as `transform(grads, variables)` with
the lists of gradients and variables of the group a rule selects, and
returns the new list of gradients. Transforms that act on each tensor alone
subclass `PerTensorTransform` and implement `transform_one(grad, variable)`.
A plain callable `(gradient, variable) -> gradient` given to a rule is
wrapped with `per_variable`.

Transforms run inside the compiled train step, once per step, and hold no
state: they are pure functions of the gradients (and variables).

Example:

>>> import keras, layerwise as lw
>>> clip = lw.chain(lw.clip_by_norm(1.0), lw.scale(0.5))
>>> v = keras.Variable([0.0, 0.0], name="w")
>>> [g] = clip([keras.ops.convert_to_tensor([3.0, 4.0])], [v])
>>> [round(float(x), 4) for x in keras.ops.convert_to_numpy(g)]
[0.3, 0.4]
"""

import keras
from keras import ops

from layerwise import _validation
from layerwise.optim import serializable

_PACKAGE = "layerwise"


class GradientTransform(serializable.Transform):
    """Base class of gradient transforms.

    Subclasses implement `__call__(grads, variables) -> grads` and
    `get_config()`, and are registered with
    `keras.saving.register_keras_serializable` so rules that use them can be
    saved in `.keras` files (see `serializable.Transform`).
    """

    def __call__(self, grads, variables):
        raise NotImplementedError


class PerTensorTransform(GradientTransform):
    """A transform that maps each gradient on its own."""

    def __call__(self, grads, variables):
        return [self.transform_one(g, v) for g, v in zip(grads, variables)]

    def transform_one(self, grad, variable):
        raise NotImplementedError


def _safe_norm(sum_of_squares):
    # The double `where` keeps the gradient of sqrt finite at 0 (a zero
    # gradient tensor must stay zero, not become NaN).
    positive = sum_of_squares > 0
    safe = ops.where(positive, sum_of_squares, ops.ones_like(sum_of_squares))
    return ops.where(positive, ops.sqrt(safe), sum_of_squares)


def _rescale(grad, norm, max_norm):
    max_norm = ops.cast(max_norm, grad.dtype)
    norm = ops.cast(norm, grad.dtype)
    return grad * max_norm / ops.maximum(norm, max_norm)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ClipByValue(PerTensorTransform):
    """Clips every gradient element to `[min_value, max_value]`."""

    def __init__(self, max_value, min_value=None):
        self.max_value = _validation.check_nonnegative_finite(
            max_value, "max_value"
        )
        if min_value is None:
            min_value = -self.max_value
        if not _validation.is_real_number(min_value) or not (
            min_value <= self.max_value
        ):
            raise ValueError(
                "`min_value` must be a number <= max_value. "
                f"Received: min_value={min_value!r}, max_value={max_value!r}"
            )
        self.min_value = float(min_value)

    def transform_one(self, grad, variable):
        return ops.clip(grad, self.min_value, self.max_value)

    def get_config(self):
        return {"max_value": self.max_value, "min_value": self.min_value}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ClipByNorm(PerTensorTransform):
    """Rescales each gradient tensor so its L2 norm is at most `max_norm`."""

    def __init__(self, max_norm):
        self.max_norm = _validation.check_positive_finite(max_norm, "max_norm")

    def transform_one(self, grad, variable):
        norm = _safe_norm(ops.sum(ops.square(grad)))
        return _rescale(grad, norm, self.max_norm)

    def get_config(self):
        return {"max_norm": self.max_norm}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ClipByL1Norm(PerTensorTransform):
    """Rescales each gradient tensor so its L1 norm is at most `max_norm`."""

    def __init__(self, max_norm):
        self.max_norm = _validation.check_positive_finite(max_norm, "max_norm")

    def transform_one(self, grad, variable):
        return _rescale(grad, ops.sum(ops.abs(grad)), self.max_norm)

    def get_config(self):
        return {"max_norm": self.max_norm}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ClipByGlobalNorm(GradientTransform):
    """Rescales a group's gradients so their joint L2 norm is <= `max_norm`.

    The group is every (non-frozen) variable the rule selects: the norm is
    taken over all of them together, as `tf.clip_by_global_norm` does.
    """

    def __init__(self, max_norm):
        self.max_norm = _validation.check_positive_finite(max_norm, "max_norm")

    def __call__(self, grads, variables):
        if not grads:
            return grads
        total = ops.sum(
            ops.stack(
                [ops.sum(ops.square(ops.cast(g, "float32"))) for g in grads]
            )
        )
        norm = _safe_norm(total)
        return [_rescale(g, norm, self.max_norm) for g in grads]

    def get_config(self):
        return {"max_norm": self.max_norm}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Scale(PerTensorTransform):
    """Multiplies gradients by a constant `factor`."""

    def __init__(self, factor):
        if not _validation.is_real_number(factor):
            raise ValueError(
                f"`factor` must be a number. Received: factor={factor!r}"
            )
        self.factor = float(factor)

    def transform_one(self, grad, variable):
        return grad * ops.cast(self.factor, grad.dtype)

    def get_config(self):
        return {"factor": self.factor}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Zero(PerTensorTransform):
    """Replaces gradients by zeros (the variable still gets its update rule,
    e.g. momentum and weight decay keep acting; to stop all updates, freeze
    the variable with `Rule(..., frozen=True)` instead)."""

    def transform_one(self, grad, variable):
        return ops.zeros_like(grad)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PerVariable(serializable.WrapsFunction, PerTensorTransform):
    """Wraps a plain callable `(gradient, variable) -> gradient`.

    Args:
        fn: The callable. Register it with
            `keras.saving.register_keras_serializable` to save models that
            use it; lambdas are refused at load under `safe_mode=True`.
    """

    n_args = 2
    signature = "(gradient, variable) -> gradient"
    arg_name = "transform"
    factory = "per_variable"

    def transform_one(self, grad, variable):
        return self.fn(grad, variable)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Chain(GradientTransform):
    """Applies several transforms in order."""

    def __init__(self, transforms):
        self.transforms = tuple(as_transform(t) for t in transforms)

    def __call__(self, grads, variables):
        for transform in self.transforms:
            new = transform(grads, variables)
            if new is None:
                raise TypeError(
                    f"A transform of {self!r} must return a list of "
                    f"gradients. Received None from {transform!r}"
                )
            grads = list(new)
        return grads

    def get_config(self):
        return {
            "transforms": [
                keras.saving.serialize_keras_object(t) for t in self.transforms
            ]
        }

    @classmethod
    def from_config(cls, config):
        return cls(
            [
                keras.saving.deserialize_keras_object(t)
                for t in config["transforms"]
            ]
        )

    def __repr__(self):
        return "chain(" + ", ".join(repr(t) for t in self.transforms) + ")"


def clip_by_value(max_value, min_value=None):
    """Clips gradient elements to `[min_value, max_value]`.

    Args:
        max_value: Upper bound (>= 0).
        min_value: Lower bound; defaults to `-max_value`.

    Returns:
        A `ClipByValue` transform.
    """
    return ClipByValue(max_value, min_value)


def clip_by_norm(max_norm):
    """Clips each gradient tensor to an L2 norm of at most `max_norm`.

    Returns:
        A `ClipByNorm` transform.
    """
    return ClipByNorm(max_norm)


def clip_by_l1_norm(max_norm):
    """Clips each gradient tensor to an L1 norm of at most `max_norm`.

    Returns:
        A `ClipByL1Norm` transform.
    """
    return ClipByL1Norm(max_norm)


def clip_by_global_norm(max_norm):
    """Clips the joint L2 norm of a rule's group of gradients.

    Returns:
        A `ClipByGlobalNorm` transform.
    """
    return ClipByGlobalNorm(max_norm)


def scale(factor):
    """Multiplies gradients by `factor`.

    Scaling gradients is not scaling the learning rate: adaptive optimizers
    (Adam, RMSprop, ...) normalize the factor away. Use `Rule(lr_scale=...)`
    to change how fast variables learn.

    Returns:
        A `Scale` transform.
    """
    return Scale(factor)


def zero():
    """Replaces gradients by zeros.

    Returns:
        A `Zero` transform.
    """
    return Zero()


def per_variable(fn):
    """Wraps a callable `(gradient, variable) -> gradient` as a transform.

    Returns:
        A `PerVariable` transform.
    """
    return PerVariable(fn)


def chain(*transforms):
    """Composes transforms, applied left to right.

    Returns:
        A `Chain` transform.
    """
    return Chain(transforms)


def as_transform(transform):
    """Returns `transform` as a `GradientTransform` (wrapping callables)."""
    if isinstance(transform, GradientTransform):
        return transform
    if _validation.is_function(transform):
        return PerVariable(transform)
    raise TypeError(
        "A gradient transform must be a `layerwise` transform or a callable "
        f"`(gradient, variable) -> gradient`. Received: transform={transform!r}"
    )
