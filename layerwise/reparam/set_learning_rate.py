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

Built on `parametrize`. The wrapped layer becomes the wrapper's: its own
variables store `phi`, so it must be a new layer, built by the wrapper. A
built layer is refused rather than changed in place: a layer already in use
(in a built model, say) would then show `phi`, not its weights, through its
`get_weights()`, `weights` and saved files. The wrapper's `get_weights`,
`set_weights` and `.keras` files speak `theta`.
"""

import contextlib
import functools
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
    `set_weights`, saving and loading the wrapper speak `theta`; the model's
    outputs are those of the plain layer. Prefer `LayerwiseOptimizer` rules
    where you can change the optimizer: they are exact for every optimizer
    (no epsilon or weight-decay caveat), can be changed at runtime without
    touching weights and apply to the layers of a built model.

    `layer` must be new (not built): it becomes the wrapper's, and its
    variables store `phi`. Call the wrapper, never the layer itself, and read
    or write its weights through the wrapper. A built layer raises, since
    its variables would switch to `phi` under whoever else uses it; for a
    built model, use `LayerwiseOptimizer` rules or rebuild the model with
    `keras.models.clone_model` (see docs/reparameterization.md).

    Args:
        layer: the layer to wrap, not built yet.
        scale: positive float, the factor on the learning rate.
        optimizer: `"adaptive"` (Adam, RMSprop, Adagrad, ...) or `"sgd"`
            (SGD, with or without momentum): which optimizer will train it.
        parametrizations: used when loading; leave it out.
        **kwargs: base wrapper keyword arguments.

    Example:

    >>> layer = SetLearningRate(keras.layers.Dense(4), 0.1)
    >>> model = keras.Sequential([keras.Input((8,)), layer])
    >>> model.compile(optimizer="adam", loss="mse")
    >>> [w.shape for w in layer.get_weights()]  # theta, as a plain Dense
    [(8, 4), (4,)]
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
        restoring = parametrizations is not None
        if isinstance(layer, keras.layers.Layer):
            _check_owned_by_nobody(layer, check_built=not restoring)
        self.optimizer = optimizer
        self._initial_scale = scale
        super().__init__(layer, parametrizations, **kwargs)
        if not self.layer.built:
            # Loading may hand over a layer already built from its config.
            _BuildInWrapper.install(self)

    def build(self, input_shape=None):
        guard = internals.instance_override(self.layer, "build")
        if isinstance(guard, _BuildInWrapper):
            with guard.allowed():
                super().build(input_shape)
        else:
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


def _check_owned_by_nobody(layer, check_built):
    owned = isinstance(internals.instance_override(layer, "build"), _BuildInWrapper)
    if owned or any(
        isinstance(p, LearningRateScale) for _, p in parametrizations(layer)
    ):
        raise ValueError(
            f"Layer '{layer.name}' already has a `SetLearningRate`; change "
            "its rate with `set_scale` instead of wrapping it again."
        )
    if check_built and layer.built:
        raise ValueError(
            "`layer` must be a new layer, not built yet. Received: "
            f"layer={layer!r}. `SetLearningRate` stores each weight as "
            "`phi = theta / c` in the layer's own variables, so a layer "
            "already in use (e.g. inside a built model) would show `phi` "
            "instead of its weights through `get_weights()`, `weights` and "
            "saved files. Wrap a new layer where you build the model, e.g. "
            "`SetLearningRate(keras.layers.Dense(16), 0.1)`. For a built "
            "model, give the layer its rate with a "
            "`layerwise.LayerwiseOptimizer` rule, "
            "`layerwise.Rule(layer, lr_scale=0.1)`, which leaves the weights "
            "as they are, or rebuild the model around a copy of the layer "
            "with `keras.models.clone_model` (see "
            "docs/reparameterization.md)."
        )


class _BuildInWrapper:
    """The per-instance `build` of a layer that a `SetLearningRate` owns.

    A model that called the layer instead of its wrapper would build it and
    train it at the optimizer's rate, with no error: this refuses. The
    wrapper builds the layer within `allowed()`, which then gives the layer
    its own `build` back.
    """

    def __init__(self, layer, wrapper_name):
        build = internals.instance_override(layer, "build")
        functools.update_wrapper(self, build)  # Keras reads its signature.
        self.build = build
        self.layer = layer
        self.wrapper_name = wrapper_name
        self.building = False

    @classmethod
    def install(cls, wrapper):
        guard = cls(wrapper.layer, wrapper.name)
        internals.set_instance_override(wrapper.layer, "build", guard)

    @contextlib.contextmanager
    def allowed(self):
        self.building = True
        try:
            yield
        finally:
            self.building = False
            # A pending parametrization may have restored `build` already.
            if internals.instance_override(self.layer, "build") is self:
                internals.set_instance_override(self.layer, "build", self.build)

    def __call__(self, *args, **kwargs):
        if not self.building:
            raise ValueError(
                f"Layer '{self.layer.name}' belongs to the `SetLearningRate` "
                f"wrapper '{self.wrapper_name}' but is being built outside "
                "of it: a model calls the layer instead of the wrapper, and "
                "would train it at the optimizer's own rate. Put the wrapper "
                "in the model in place of the layer, e.g. "
                "`keras.Sequential([SetLearningRate(keras.layers.Dense(16), "
                "0.1), ...])`."
            )
        return self.build(*args, **kwargs)


def _is_state(layer, path):
    """Whether the variable at `path` belongs to a parametrization's state."""
    return any(v.path == path for _, p in parametrizations(layer) for v in p.weights)
