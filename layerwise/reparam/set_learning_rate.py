"""`SetLearningRate`: a layer learns at `scale` x the optimizer's rate.

Each weight `theta` of the layer is stored as `phi = theta / c` and used as
`c * phi`. The gradient reaching `phi` is `c * dL/dtheta`, so one optimizer
step moves `theta` by `c` times the step on `phi`:

- SGD (with or without momentum): the step on `phi` scales with `c`, so
  `theta` moves `c**2` times as far: `c = sqrt(scale)`.
- Adaptive optimizers (Adam, RMSprop, ...): the gradient's scale cancels in
  the normalization, so `theta` moves `c` times as far: `c = scale`. This is
  exact up to epsilon, which acts as `epsilon / c`; decoupled weight decay
  (AdamW's `weight_decay`) acts on `phi`, so its rate on `theta` stays
  `learning_rate * weight_decay`, not `scale` times it.

Built on `parametrize`: the layer is changed in place (a model that already
contains it learns at the new rate), and computes exactly what it computed
before, up to one floating-point rounding of `c * (theta / c)`.
"""

import math

import keras
from keras import ops

from layerwise._internals import layers as internals
from layerwise.reparam.parametrize import Parametrization
from layerwise.reparam.parametrize import Parametrized
from layerwise.reparam.parametrize import _add
from layerwise.reparam.parametrize import _hook
from layerwise.reparam.parametrize import parametrizations

_OPTIMIZERS = ("adaptive", "sgd")


@keras.saving.register_keras_serializable(package="layerwise")
class LearningRateScale(Parametrization):
    """`theta = factor * phi`, the factor a non-trainable variable.

    Args:
        factor: positive float, the initial factor.
        **kwargs: base layer keyword arguments.
    """

    def __init__(self, factor=1.0, **kwargs):
        super().__init__(**kwargs)
        self.initial_factor = float(factor)

    def build(self, input_shape):
        self.factor = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(self.initial_factor),
            trainable=False,
            name="factor",
        )

    def call(self, phi, training=None):
        return phi * ops.cast(self.factor, phi.dtype)

    def right_inverse(self, theta):
        return theta / ops.cast(self.factor, theta.dtype)

    def get_config(self):
        factor = float(self.factor.numpy()) if self.built else self.initial_factor
        return {**super().get_config(), "factor": factor}


def _check_scale(scale):
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not (
        math.isfinite(scale) and scale > 0
    ):
        raise ValueError(
            f"`scale` must be a positive number. Received: scale={scale!r}"
        )
    return float(scale)


@keras.saving.register_keras_serializable(package="layerwise")
class SetLearningRate(Parametrized):
    """Makes `layer` learn at `scale` times the optimizer's learning rate.

    Needs no change to the optimizer. The layer's own trainable weights are
    reparameterized as `theta = c * phi` (`c = scale` for adaptive
    optimizers, `sqrt(scale)` for SGD and momentum). `get_weights`,
    `set_weights`, saving and loading speak `theta`; the model's outputs are
    those of the plain layer. Prefer `LayerwiseOptimizer` rules where you can
    change the optimizer: they are exact for every optimizer (no epsilon or
    weight-decay caveat) and can be changed at runtime without touching
    weights.

    Args:
        layer: the layer to wrap, built or not (e.g. inside a built model).
        scale: positive float, the factor on the learning rate.
        optimizer: `"adaptive"` (Adam, RMSprop, Adagrad, ...) or `"sgd"`
            (SGD, with or without momentum): which optimizer will train it.
        parametrizations: used when loading; leave it out.
        **kwargs: base wrapper keyword arguments.

    Example:

    >>> layer = SetLearningRate(keras.layers.Dense(4), 0.1)
    >>> model = keras.Sequential([keras.Input((8,)), layer])
    >>> model.compile(optimizer="adam", loss="mse")
    >>> layer.set_scale(0.5)  # same outputs, new rate
    """

    def __init__(
        self, layer, scale, optimizer="adaptive", parametrizations=None, **kwargs
    ):
        scale = _check_scale(scale)
        if optimizer not in _OPTIMIZERS:
            raise ValueError(
                f"`optimizer` must be one of {_OPTIMIZERS}. Received: "
                f"optimizer={optimizer!r}"
            )
        self.optimizer = optimizer
        self._initial_scale = scale
        restoring = parametrizations is not None
        super().__init__(layer, parametrizations, **kwargs)
        if self.layer.built and not restoring:
            self._scale_weights()

    def build(self, input_shape=None):
        super().build(input_shape)
        if not self._scales():
            self._scale_weights()

    def _factor(self, scale):
        return scale if self.optimizer == "adaptive" else math.sqrt(scale)

    def _scales(self):
        return [
            p
            for _, p in parametrizations(self.layer)
            if isinstance(p, LearningRateScale)
        ]

    def _scale_weights(self):
        layer = self.layer
        if self._scales():
            raise ValueError(
                f"Layer '{layer.name}' already has a `SetLearningRate`; change "
                "its rate with `set_scale` instead of wrapping it again."
            )
        own = internals.own_variables(layer)
        own_ids = {id(v) for v in own.values()}
        foreign = [v.path for v in layer.trainable_weights if id(v) not in own_ids]
        foreign = [p for p in foreign if not _is_state(layer, p)]
        if foreign:
            raise ValueError(
                "`SetLearningRate` applies to a layer's own weights; layer "
                f"'{layer.name}' has trainable weights held by sublayers: "
                f"{foreign}. Wrap those sublayers instead."
            )
        factor = self._factor(self._initial_scale)
        for name, variable in own.items():
            if variable.trainable:
                _add(layer, name, LearningRateScale(factor), first=True)

    @property
    def scale(self):
        """The current factor on the learning rate."""
        scales = self._scales()
        if not scales:
            return self._initial_scale
        c = float(scales[0].factor.numpy())
        return c if self.optimizer == "adaptive" else c * c

    def set_scale(self, scale):
        """Change the factor on the learning rate, keeping the outputs.

        `phi` is rescaled so that `theta = c * phi` is unchanged (up to one
        rounding). Under an adaptive optimizer, the accumulated moments were
        gathered at the old factor; they adapt within a few steps.

        Args:
            scale: positive float, the new factor.
        """
        scale = _check_scale(scale)
        hook = _hook(self.layer)
        for name, p in parametrizations(self.layer):
            if isinstance(p, LearningRateScale):
                variable, _ = hook.targets[name]
                theta = p(ops.convert_to_tensor(variable))
                p.factor.assign(self._factor(scale))
                variable.assign(p.right_inverse(theta))
        self._initial_scale = scale

    def get_config(self):
        config = {"scale": self.scale, "optimizer": self.optimizer}
        return {**super().get_config(), **config}


def _is_state(layer, path):
    """Whether the variable at `path` belongs to a parametrization's state."""
    return any(v.path == path for _, p in parametrizations(layer) for v in p.weights)
