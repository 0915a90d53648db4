"""Update transforms: functions of the change an optimizer computed.

A rule's `update=[...]` transforms act on the *update*: the change its
variables' optimizer computed from the gradient at this step (`new weights -
weights`, after the decoupled weight decay, which lands outside them as in
timm's cautious AdamW). One protocol: a transform is called as
`transform(updates, grads, weights, learning_rates)` with, for the
variables the rule selects,

- `updates`: the changes (what lands is `weights + update`, optax's sign
  convention: a descent step points against the gradient);
- `grads`: the gradients the optimizer saw (after gradient transforms and
  clipping);
- `weights`: the values the update is added to (after weight decay);
- `learning_rates`: each variable's effective learning rate (its group's
  rate, multipliers included), as float32 scalars: the update "before the
  learning rate" is `update / learning_rate`;

and returns the new list of updates, same shapes and dtypes. Transforms
that act on each tensor alone subclass `PerTensorUpdateTransform`; a plain
callable `(update, gradient, weights) -> update` is wrapped with
`per_variable_update`. They hold no state and run inside the compiled step.

Example:

>>> import keras, layerwise as lw
>>> ops = keras.ops
>>> [u] = lw.clip_update(1.0)(
...     [ops.convert_to_tensor([3.0, 4.0])], [ops.ones(2)], [ops.ones(2)], [0.1])
>>> [round(float(x), 4) for x in ops.convert_to_numpy(u)]
[0.6, 0.8]
"""

import keras
from keras import ops

from layerwise import _validation
from layerwise.optim import serializable
from layerwise.optim import transforms as transforms_lib

_PACKAGE = "layerwise"


class UpdateTransform(serializable.Transform):
    """Base class of update transforms.

    Subclasses implement `__call__(updates, grads, weights, learning_rates)
    -> updates` and `get_config()`, and are registered with
    `keras.saving.register_keras_serializable` so rules using them can be
    saved in `.keras` files (see `serializable.Transform`).
    """

    def __call__(self, updates, grads, weights, learning_rates):
        raise NotImplementedError


class PerTensorUpdateTransform(UpdateTransform):
    """An update transform that maps each tensor's update on its own."""

    def __call__(self, updates, grads, weights, learning_rates):
        return [
            self.transform_one(u, g, w, r)
            for u, g, w, r in zip(updates, grads, weights, learning_rates)
        ]

    def transform_one(self, update, grad, weights, learning_rate):
        raise NotImplementedError


def _squares(x):
    return ops.sum(ops.square(ops.cast(x, "float32")))


def _norm(x):
    # float32 sum of squares; the double `where` keeps sqrt's gradient
    # finite at 0 (transforms run inside differentiable code too).
    squares = _squares(x)
    positive = squares > 0
    return ops.where(positive, ops.sqrt(ops.where(positive, squares, 1.0)), 0.0)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class TrustRatio(PerTensorUpdateTransform):
    """Scales each update by `||weights|| / ||update before the learning rate||`.

    optax's `scale_by_trust_ratio` with the same arguments, applied to
    `update / learning_rate`, then the learning rate again: the ratio is
    `trust_coefficient * max(||w||, min_norm) / (max(||u / lr||, min_norm) +
    eps)`, and 1 where either norm is 0. On SGD this is LARS' layer-wise
    rate, on Adam the LAMB trust ratio.
    """

    def __init__(self, trust_coefficient=1.0, eps=0.0, min_norm=0.0):
        self.trust_coefficient = _validation.check_positive_finite(
            trust_coefficient, "trust_coefficient"
        )
        self.eps = _validation.check_nonnegative_finite(eps, "eps")
        self.min_norm = _validation.check_nonnegative_finite(min_norm, "min_norm")

    def transform_one(self, update, grad, weights, learning_rate):
        rate = ops.cast(learning_rate, "float32")
        param_norm = ops.maximum(_norm(weights), self.min_norm)
        # ||u / lr|| without dividing the tensor: a zero rate leaves a zero
        # update (ratio 1), not a NaN.
        update_norm = ops.where(rate > 0, _norm(update) / ops.where(rate > 0, rate, 1.0), 0.0)
        update_norm = ops.maximum(update_norm, self.min_norm)
        zero = ops.logical_or(param_norm == 0, update_norm == 0)
        ratio = self.trust_coefficient * param_norm / ops.where(zero, 1.0, update_norm + self.eps)
        ratio = ops.where(zero, 1.0, ratio)
        return update * ops.cast(ratio, update.dtype)

    def get_config(self):
        return {
            "trust_coefficient": self.trust_coefficient,
            "eps": self.eps,
            "min_norm": self.min_norm,
        }


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Cautious(PerTensorUpdateTransform):
    """timm's cautious mask: keeps the coordinates whose step agrees in sign
    with the gradient (`update * grad < 0`: the update descends), rescaled
    by `1 / max(mean(mask), 1e-3)` over the tensor. A coordinate the mask
    drops lands 0, even a non-finite one (timm's `update * mask` keeps a
    NaN there)."""

    def transform_one(self, update, grad, weights, learning_rate):
        descends = ops.cast(update, "float32") * ops.cast(grad, "float32") < 0
        kept = ops.where(descends, update, ops.zeros_like(update))
        # The mask's mean read off `kept` (a descending coordinate's update
        # is not 0) with `abs(sign(.))`, which XLA on CPU fuses into the
        # reduction: `kept` is the one parameter-sized temporary, where a
        # float mask was a second one (2.00x -> 1.00x the weights' bytes).
        fraction = ops.mean(ops.abs(ops.sign(ops.cast(kept, "float32"))))
        return kept * ops.cast(1.0 / ops.maximum(fraction, 1e-3), update.dtype)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ClipUpdate(PerTensorUpdateTransform):
    """Rescales each tensor's update to an L2 norm of at most `max_norm`."""

    def __init__(self, max_norm):
        self.max_norm = _validation.check_positive_finite(max_norm, "max_norm")

    def transform_one(self, update, grad, weights, learning_rate):
        factor = self.max_norm / ops.maximum(_norm(update), self.max_norm)
        return update * ops.cast(factor, update.dtype)

    def get_config(self):
        return {"max_norm": self.max_norm}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ClipUpdateBlockRMS(PerTensorUpdateTransform):
    """Divides each tensor's update by `max(1, rms(update) / threshold)`,
    as optax's `clip_by_block_rms`."""

    def __init__(self, threshold):
        self.threshold = _validation.check_positive_finite(threshold, "threshold")

    def transform_one(self, update, grad, weights, learning_rate):
        rms = ops.sqrt(ops.mean(ops.square(ops.cast(update, "float32"))))
        return update / ops.cast(ops.maximum(1.0, rms / self.threshold), update.dtype)

    def get_config(self):
        return {"threshold": self.threshold}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SkipLargeUpdates(UpdateTransform):
    """Drops the whole update of a rule's variables at a step where its
    joint L2 norm is not below `max_norm` (or is not finite).

    Only the weights are left alone: the optimizer's slots and step count
    advanced as usual (the update was computed before it was dropped). To
    skip a step whole, slots included, use `skip_nonfinite=True`, or clip.
    """

    def __init__(self, max_norm):
        self.max_norm = _validation.check_positive_finite(max_norm, "max_norm")

    def __call__(self, updates, grads, weights, learning_rates):
        squares = sum(_squares(u) for u in updates)
        # optax's test, `norm² < max²`, which a NaN norm also fails.
        keep = squares < self.max_norm**2
        return [ops.where(keep, u, ops.zeros_like(u)) for u in updates]

    def get_config(self):
        return {"max_norm": self.max_norm}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class RelativeGradientNorm(UpdateTransform):
    """Auto-RGN (Lee et al., 2023): each tensor's update times its relative
    gradient norm `||g|| / ||w||` over the largest one among the rule's
    tensors.

    A tensor whose weights are all zero (a bias at initialization) has no
    relative norm: it keeps its update and takes no part in the maximum;
    if every relative norm is 0, updates are left as they are.
    """

    def __call__(self, updates, grads, weights, learning_rates):
        # The norms as one vector: per-tensor scalar chains feeding every
        # update made XLA's compilation 10x slower (50 tensors: 26 s vs 3 s).
        weight_squares = ops.stack([_squares(w) for w in weights])
        grad_squares = ops.stack([_squares(g) for g in grads])
        has_norm = weight_squares > 0
        relative = ops.where(
            has_norm, ops.sqrt(grad_squares / ops.where(has_norm, weight_squares, 1.0)), 0.0
        )
        largest = ops.max(relative)
        factors = ops.where(
            ops.logical_or(ops.logical_not(has_norm), largest == 0),
            1.0,
            relative / ops.where(largest > 0, largest, 1.0),
        )
        return [u * ops.cast(factors[i], u.dtype) for i, u in enumerate(updates)]


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PerVariableUpdate(serializable.WrapsFunction, PerTensorUpdateTransform):
    """Wraps a plain callable `(update, gradient, weights) -> update`.

    Args:
        fn: The callable. Register it with
            `keras.saving.register_keras_serializable` to save models that
            use it; lambdas are refused at load under `safe_mode=True`.
    """

    n_args = 3
    signature = "(update, gradient, weights) -> update"
    arg_name = "transform"
    factory = "per_variable_update"

    def transform_one(self, update, grad, weights, learning_rate):
        return self.fn(update, grad, weights)


def trust_ratio(trust_coefficient=1.0, eps=0.0, min_norm=0.0):
    """Scales each update by its trust ratio (LARS, LAMB), on any optimizer.

    The ratio is `trust_coefficient * ||weights|| / ||update /
    learning_rate||` (optax's `scale_by_trust_ratio` applied to the update
    before the learning rate), and 1 where either norm is 0.

    Args:
        trust_coefficient: Multiplier of the ratio (> 0).
        eps: Added to the update's norm in the denominator (>= 0).
        min_norm: Both norms are at least this (>= 0).

    Returns:
        A `TrustRatio` update transform.

    Example:

    >>> rule = lw.Rule("encoder/.*", update=[lw.trust_ratio()])
    >>> t = keras.ops.convert_to_tensor
    >>> # ||w|| = 10, ||u / lr|| = 0.5 / 0.1 = 5: the update doubles.
    >>> [u] = lw.trust_ratio()([t([0.3, 0.4])], [t([-1.0, -1.0])], [t([6.0, 8.0])], [0.1])
    >>> [round(float(x), 4) for x in keras.ops.convert_to_numpy(u)]
    [0.6, 0.8]
    """
    return TrustRatio(trust_coefficient, eps, min_norm)


def cautious():
    """timm's cautious masking (C-AdamW, C-Lion), on any optimizer.

    Keeps the coordinates whose update descends (`update * gradient < 0`)
    and scales them by `1 / max(fraction kept, 1e-3)` over each tensor.

    Returns:
        A `Cautious` update transform.

    Example:

    >>> t = keras.ops.convert_to_tensor
    >>> # Two of four coordinates descend: they are kept, times 2.
    >>> [u] = lw.cautious()(
    ...     [t([0.3, -0.4, 0.2, 0.1])], [t([-1.0, -1.0, -1.0, 1.0])], [t([0.0] * 4)], [0.1])
    >>> [round(float(x), 4) for x in keras.ops.convert_to_numpy(u)]
    [0.6, 0.0, 0.4, 0.0]
    """
    return Cautious()


def clip_update(max_norm):
    """Clips each tensor's update to an L2 norm of at most `max_norm`.

    Args:
        max_norm: The largest L2 norm of a tensor's update (> 0).

    Returns:
        A `ClipUpdate` update transform.

    Example:

    >>> t = keras.ops.convert_to_tensor
    >>> [u, v] = lw.clip_update(1.0)(
    ...     [t([3.0, 4.0]), t([0.3, 0.4])], [t([1.0, 1.0])] * 2, [t([1.0, 1.0])] * 2, [0.1] * 2)
    >>> [round(float(x), 4) for x in keras.ops.convert_to_numpy(u)]
    [0.6, 0.8]
    >>> [round(float(x), 4) for x in keras.ops.convert_to_numpy(v)]
    [0.3, 0.4]
    """
    return ClipUpdate(max_norm)


def clip_update_block_rms(threshold):
    """Clips each tensor's update to an RMS of at most `threshold`
    (optax's `clip_by_block_rms`).

    Args:
        threshold: The largest root mean square of a tensor's update (> 0).

    Returns:
        A `ClipUpdateBlockRMS` update transform.

    Example:

    >>> t = keras.ops.convert_to_tensor
    >>> # rms([1, 7]) = 5: divided by 5 / 1.
    >>> [u] = lw.clip_update_block_rms(1.0)(
    ...     [t([1.0, 7.0])], [t([1.0, 1.0])], [t([1.0, 1.0])], [0.1])
    >>> [round(float(x), 4) for x in keras.ops.convert_to_numpy(u)]
    [0.2, 1.4]
    """
    return ClipUpdateBlockRMS(threshold)


def skip_large_updates(max_norm):
    """Lands no update on a rule's variables at a step where their joint
    update norm reaches `max_norm` (or is not finite), as optax's
    `skip_large_updates`; the optimizer's slots still advance.

    Args:
        max_norm: The joint L2 norm, over the rule's variables, from which
            a step's updates are dropped (> 0).

    Returns:
        A `SkipLargeUpdates` update transform.

    Example:

    >>> t = keras.ops.convert_to_tensor
    >>> updates, grads, weights = [t([0.6]), t([0.8])], [t([1.0])] * 2, [t([1.0])] * 2
    >>> # The joint norm is 1.0: below 1.5 it lands, at 1.0 it is dropped.
    >>> [float(u[0]) for u in lw.skip_large_updates(1.5)(updates, grads, weights, [0.1] * 2)]
    [0.6..., 0.8...]
    >>> [float(u[0]) for u in lw.skip_large_updates(1.0)(updates, grads, weights, [0.1] * 2)]
    [0.0, 0.0]
    """
    return SkipLargeUpdates(max_norm)


def relative_gradient_norm():
    """Auto-RGN (Lee et al., 2023): per-tensor rates from the relative
    gradient norms.

    Each tensor's update is scaled by its `||gradient|| / ||weights||` over
    the largest among the rule's tensors (a tensor whose weights are all 0
    keeps its update).

    Returns:
        A `RelativeGradientNorm` update transform.

    Example:

    >>> t = keras.ops.convert_to_tensor
    >>> # Relative norms 0.5 / 5 = 0.1 and 0.05 / 1 = 0.05: factors 1, 0.5.
    >>> [u, v] = lw.relative_gradient_norm()(
    ...     [t([1.0, 1.0]), t([1.0, 1.0])], [t([0.3, 0.4]), t([0.05, 0.0])],
    ...     [t([3.0, 4.0]), t([1.0, 0.0])], [0.1] * 2)
    >>> [round(float(x), 4) for x in keras.ops.convert_to_numpy(u)]
    [1.0, 1.0]
    >>> [round(float(x), 4) for x in keras.ops.convert_to_numpy(v)]
    [0.5, 0.5]
    """
    return RelativeGradientNorm()


def per_variable_update(fn):
    """Wraps a callable `(update, gradient, weights) -> update`.

    Args:
        fn: The callable, called once per variable with its update,
            gradient and weights (as they were before the update); it
            returns the new update, of the same shape and dtype. Register
            it with `keras.saving.register_keras_serializable` to save
            models that use it.

    Returns:
        A `PerVariableUpdate` update transform.

    Example:

    >>> t = keras.ops.convert_to_tensor
    >>> halve = lw.per_variable_update(lambda u, g, w: 0.5 * u)
    >>> [u] = halve([t([3.0, 4.0])], [t([1.0, 1.0])], [t([1.0, 1.0])], [0.1])
    >>> [round(float(x), 4) for x in keras.ops.convert_to_numpy(u)]
    [1.5, 2.0]
    """
    return PerVariableUpdate(fn)


def as_update_transform(transform):
    """Returns `transform` as an `UpdateTransform` (wrapping callables)."""
    if isinstance(transform, UpdateTransform):
        return transform
    if isinstance(transform, transforms_lib.GradientTransform):
        raise TypeError(
            f"{transform!r} is a gradient transform: give it to the rule's "
            "`gradient=`, not to `update=`, which takes update transforms "
            "(`lw.trust_ratio()`, `lw.clip_update(...)`, ...). Received: "
            f"update transform={transform!r}"
        )
    if _validation.is_function(transform):
        return PerVariableUpdate(transform)
    raise TypeError(
        "An update transform must be a `layerwise` update transform or a "
        "callable `(update, gradient, weights) -> update`. Received: "
        f"transform={transform!r}"
    )
