"""Metrics on any intermediate tensor: `observe`, `Observe`.

An `Observe` layer is the identity on the data path. It owns a Keras metric
(`layerwise.observation.metrics`), fed with `fn(tensor)` on every forward
pass of `fit`, `evaluate` and a custom loop. Keras' trainer reports the
metrics of all sublayers, so the value appears in the progress bar,
`History.history`, `val_` logs, the results of `evaluate` and TensorBoard,
in a plain `keras.Model` on every backend, with no override of
`compute_metrics`. `ObservedModel`, once needed on JAX, is a deprecated
alias of `keras.Model`.
"""

import contextvars
import warnings

import keras
from keras import ops

from layerwise._internals import trainers as _trainer_internals
from layerwise.observation.metrics import LastValue  # noqa: F401 (public here)
from layerwise.observation.metrics import ObservedLastValue
from layerwise.observation.metrics import ObservedMean

REDUCTIONS = ("mean", "last")

# True while `ObservedModel.from_config` runs: loading a file saved with it
# is not a use of the deprecated name by the caller.
_loading = contextvars.ContextVar("layerwise_loading_observed_model", default=False)


@keras.saving.register_keras_serializable(package="layerwise")
class Observe(keras.layers.Layer):
    """Identity layer that reports `fn(inputs)` as a metric named `name`.

    The metric is updated on every forward pass with `fn` applied to the
    inputs, under `stop_gradient`; outputs and gradients are the inputs'.
    How per-batch values become the logged value:

    - `reduction="mean"` (default): running mean over the epoch (or the
      `evaluate` run), each batch weighted by its size, exactly like the
      `loss` entry of the logs. If `fn` returns a per-sample mean, the epoch
      value is the mean over all samples seen.
    - `reduction="last"`: the value of the last batch, like a
      `keras.utils.Progbar` `stateful_metrics` entry.

    Metrics are reset when `fit` starts an epoch and when `evaluate` starts.

    Args:
        name: Name of the layer and of the metric: the key in the logs,
            `History.history` and, with a `val_` prefix, the validation logs.
        fn: Callable mapping the inputs to a tensor; a non-scalar result is
            averaged to a scalar. Defaults to the mean of the inputs. Register
            it with `keras.saving.register_keras_serializable` to save the
            model; a lambda cannot be loaded under `safe_mode=True`.
        reduction: `"mean"` or `"last"`, see above.
        capture: Whether `layerwise.capture(model)` records the inputs
            of this layer when no `names` are given.
        **kwargs: Base layer keyword arguments, such as `dtype`.

    Example:

    >>> inputs = keras.Input((3,))
    >>> h = keras.layers.Dense(4, name="hidden")(inputs)
    >>> h = Observe("h_sq", fn=lambda t: keras.ops.mean(t**2))(h)
    >>> model = keras.Model(inputs, keras.layers.Dense(1)(h))
    >>> model.compile(optimizer="sgd", loss="mse")
    >>> sorted(model.evaluate(np.ones((8, 3)), np.ones((8, 1)), verbose=0,
    ...                       return_dict=True))
    ['h_sq', 'loss']
    """

    def __init__(
        self, name, fn=None, reduction="mean", capture=False, **kwargs
    ):
        if not isinstance(name, str) or not name or "/" in name:
            raise ValueError(
                "`name` must be a non-empty string without '/'. "
                f"Received: name={name!r}"
            )
        if fn is not None and not callable(fn):
            raise TypeError(
                f"`fn` must be a callable or None. Received: fn={fn!r}"
            )
        if reduction not in REDUCTIONS:
            raise ValueError(
                f"`reduction` must be one of {REDUCTIONS}. "
                f"Received: reduction={reduction!r}"
            )
        if not isinstance(capture, bool):
            raise TypeError(
                f"`capture` must be a bool. Received: capture={capture!r}"
            )
        super().__init__(name=name, **kwargs)
        self.fn = fn
        self.reduction = reduction
        self.capture = capture
        self.supports_masking = True
        metric_class = ObservedMean if reduction == "mean" else ObservedLastValue
        self.metric = metric_class(name=name)

    def call(self, inputs):
        value = ops.stop_gradient(inputs)
        value = self.fn(value) if self.fn is not None else ops.mean(value)
        # `fn` may read weights too: cut them, so that on JAX the value
        # belongs to the step, not to its gradient computation (see
        # `layerwise.observation.metrics`).
        value = ops.stop_gradient(value)
        batch_size = ops.shape(inputs)[0] if len(inputs.shape) else 1
        self.metric.record(value, batch_size)
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = {
            "fn": (
                None
                if self.fn is None
                else keras.saving.serialize_keras_object(self.fn)
            ),
            "reduction": self.reduction,
            "capture": self.capture,
        }
        return {**super().get_config(), **config}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if config.get("fn") is not None:
            config["fn"] = keras.saving.deserialize_keras_object(config["fn"])
        return cls(**config)


def observe(x, name, fn=None, *, reduction="mean", capture=False):
    """Reports `fn(x)` as a metric named `name`; returns `x` unchanged.

    On a symbolic tensor (building a functional model) this creates an
    `Observe` layer and returns its output. Inside a custom layer's `call`,
    the layer must own an `Observe` sublayer named `name` (created in
    `__init__`, which carries `fn`, `reduction` and `capture`); `observe`
    finds it and passes `x` through it. Keras layers cannot create sublayers
    during `call`, hence the declaration. In a subclassed model's own `call`,
    call the `Observe` layer itself: Keras' JAX trainer runs a model's `call`
    outside of `Layer.__call__`, where `observe` cannot find the model.

    Args:
        x: The tensor to observe.
        name: Name of the metric (and of the `Observe` layer).
        fn: See `Observe`. Only on a symbolic `x`.
        reduction: See `Observe`. Only on a symbolic `x`.
        capture: See `Observe`. Only on a symbolic `x`.

    Returns:
        `x`, unchanged (a new symbolic tensor on a symbolic `x`).

    Example:

    >>> inputs = keras.Input((3,))
    >>> h = keras.layers.Dense(4, activation="relu")(inputs)
    >>> h = observe(h, "h_norm", fn=lambda t: keras.ops.mean(
    ...     keras.ops.sum(t**2, axis=-1)))
    >>> model = keras.Model(inputs, keras.layers.Dense(1)(h))
    >>> [layer.name for layer in model.layers][-2]
    'h_norm'
    """
    if keras.backend.is_keras_tensor(x):
        return Observe(name, fn=fn, reduction=reduction, capture=capture)(x)
    if fn is not None or reduction != "mean" or capture:
        raise ValueError(
            "`fn`, `reduction` and `capture` can only be given when `x` is "
            "symbolic. Inside a layer's `call`, set them on the `Observe` "
            f"layer the layer owns. Received: fn={fn!r}, "
            f"reduction={reduction!r}, capture={capture!r}"
        )
    owner = _trainer_internals.calling_layer()
    if owner is None:
        raise ValueError(
            f"`observe(x, {name!r})` on a non-symbolic tensor must run "
            "inside a layer's `call`, where it finds the `Observe` layer "
            "that layer owns. Received: x of type "
            f"{type(x).__name__} outside of any layer call. In a subclassed "
            "model's own `call`, call the `Observe` layer itself "
            "(`h = self.h_norm(h)`): Keras' JAX trainer runs a model's "
            "`call` outside of `Layer.__call__`, so `observe` cannot find "
            "the model there."
        )
    for layer in _trainer_internals.sublayers(owner):
        if isinstance(layer, Observe) and layer.name == name:
            return layer(x)
    raise ValueError(
        f"Layer '{owner.name}' called `observe(x, {name!r})` but owns no "
        f"`Observe` layer named {name!r}. Create it in `__init__`, e.g. "
        f"`self.obs = layerwise.Observe({name!r}, fn=...)`."
    )


@keras.saving.register_keras_serializable(package="layerwise")
class ObservedModel(keras.Model):
    """Deprecated: use `keras.Model`, which reports `Observe` layers everywhere.

    `ObservedModel` once carried `Observe` values through JAX's train step;
    the layers' metrics now do that themselves (see
    `layerwise.observation.metrics`), in any `keras.Model`. It is a
    `keras.Model` subclass with no behaviour of its own. Creating one warns
    (`DeprecationWarning`); `.keras` files saved with it load without a
    warning, as an `ObservedModel`, since the name stays registered. It will
    leave `layerwise`'s public names in a future release; replace
    `ObservedModel(inputs, outputs)` by `keras.Model(inputs, outputs)` and
    `class Net(ObservedModel)` by `class Net(keras.Model)`.
    """

    def __init__(self, *args, **kwargs):
        if not _loading.get():
            warnings.warn(
                "`layerwise.ObservedModel` is deprecated: a plain "
                "`keras.Model` now reports `Observe` layers on every "
                "backend. Use `keras.Model(inputs, outputs)` (or subclass "
                "`keras.Model`) instead.",
                DeprecationWarning,
                stacklevel=2,
            )
        super().__init__(*args, **kwargs)

    @classmethod
    def from_config(cls, config, custom_objects=None):
        token = _loading.set(True)
        try:
            return super().from_config(config, custom_objects=custom_objects)
        finally:
            _loading.reset(token)
