"""Serializable schedules for `Rule(lr_scale=...)`: per-group warm-up.

A rule's `lr_scale` may be any `keras.optimizers.schedules.LearningRateSchedule`;
it is evaluated every step at the inner optimizer's iteration count, so the
variables of one group can ramp up while the others run at their full
multiplier. `LinearWarmup` is a small one that saves with the model.
"""

import numbers

import keras
from keras import ops

from layerwise import _validation

_PACKAGE = "layerwise"


def _check_steps(value, arg_name):
    if (
        not isinstance(value, numbers.Integral)
        or isinstance(value, bool)
        or value < 1
    ):
        raise ValueError(
            f"`{arg_name}` must be an integer >= 1. Received: {arg_name}={value!r}"
        )
    return int(value)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class LinearWarmup(keras.optimizers.schedules.LearningRateSchedule):
    """Ramps linearly from `initial_scale` to `scale`, then stays there.

    At optimizer step `t` (the inner optimizer's `iterations`, starting at
    0) the value is

        initial_scale + (scale - initial_scale) * min(t / warmup_steps, 1)

    the convention of Keras' own `CosineDecay(warmup_steps=...)`: with the
    default `initial_scale=0.0` the first update (step 0) is a zero step and
    step `warmup_steps` is the first at the full `scale`.

    As a rule's `lr_scale`, a variable's learning rate at step `t` is the
    inner optimizer's learning rate times this value (times the other
    matching rules' multipliers). It is also an ordinary learning-rate
    schedule: `keras.optimizers.SGD(LinearWarmup(0.1, 100))` warms the whole
    model up to 0.1.

    Args:
        scale: The value reached at `warmup_steps`, a finite number >= 0.
        warmup_steps: Number of steps of the ramp, an integer >= 1.
        initial_scale: The value at step 0, a finite number >= 0
            (default `0.0`).

    Example:

    >>> from layerwise.optim.schedules import LinearWarmup
    >>> warmup = LinearWarmup(0.5, warmup_steps=4)
    >>> [round(float(warmup(step)), 3) for step in range(6)]
    [0.0, 0.125, 0.25, 0.375, 0.5, 0.5]
    >>> lw.Rule("encoder/.*", lr_scale=warmup, name="encoder")
    Rule('encoder/.*', lr_scale=LinearWarmup(scale=0.5, warmup_steps=4), name='encoder')
    """

    def __init__(self, scale, warmup_steps, initial_scale=0.0):
        self.scale = _validation.check_nonnegative_finite(scale, "scale")
        self.warmup_steps = _check_steps(warmup_steps, "warmup_steps")
        self.initial_scale = _validation.check_nonnegative_finite(
            initial_scale, "initial_scale"
        )

    def __call__(self, step):
        step = ops.cast(step, "float32")
        fraction = ops.minimum(step / float(self.warmup_steps), 1.0)
        return self.initial_scale + (self.scale - self.initial_scale) * fraction

    def value_at(self, step):
        """The value at an integer `step`, in Python (no tensors)."""
        fraction = min(step / self.warmup_steps, 1.0)
        return self.initial_scale + (self.scale - self.initial_scale) * fraction

    def get_config(self):
        return {
            "scale": self.scale,
            "warmup_steps": self.warmup_steps,
            "initial_scale": self.initial_scale,
        }

    def __eq__(self, other):
        return type(other) is type(self) and other.get_config() == self.get_config()

    def __hash__(self):
        return hash(tuple(sorted(self.get_config().items())))

    def __repr__(self):
        extra = f", initial_scale={self.initial_scale!r}" if self.initial_scale else ""
        return (
            f"LinearWarmup(scale={self.scale!r}, "
            f"warmup_steps={self.warmup_steps!r}{extra})"
        )


def warmup(scale, steps, *, initial_scale=0.0):
    """A multiplier ramping linearly to `scale` over `steps` steps.

    Shorthand for `LinearWarmup(scale, warmup_steps=steps,
    initial_scale=initial_scale)`; see `LinearWarmup` for the exact
    per-step value.

    Args:
        scale: The multiplier after the warm-up, a finite number >= 0.
        steps: Length of the ramp in optimizer steps, an integer >= 1.
        initial_scale: The multiplier at step 0 (default `0.0`).

    Returns:
        A `LinearWarmup`, usable as a `Rule`'s `lr_scale`.

    Example:

    >>> from layerwise.optim.schedules import warmup
    >>> inputs = keras.Input((4,))
    >>> body = keras.layers.Dense(8, name="body")
    >>> head = keras.layers.Dense(2, name="head")
    >>> model = keras.Model(inputs, head(body(inputs)))
    >>> opt = lw.LayerwiseOptimizer(
    ...     keras.optimizers.Adam(1e-3),
    ...     rules=[lw.Rule(body, lr_scale=warmup(0.1, steps=100), name="body")])
    >>> opt.get_rule("body").lr_scale
    LinearWarmup(scale=0.1, warmup_steps=100)
    """
    return LinearWarmup(scale, warmup_steps=steps, initial_scale=initial_scale)

