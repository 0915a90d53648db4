"""Metrics on any intermediate tensor: `observe`, `Observe`, `ObservedModel`.

An `Observe` layer is the identity on the data path. It owns a Keras metric,
updated with `fn(tensor)` on every forward pass of `fit`, `evaluate` and a
custom loop. Keras' trainer reports the metrics of all sublayers, so the
value appears in the progress bar, `History.history`, `val_` logs, the
results of `evaluate` and TensorBoard with no override of `compute_metrics`.

On TensorFlow and PyTorch the metric is updated in place during the forward
pass. On JAX, Keras runs the forward pass of `fit`/`evaluate` through
`stateless_call`, which threads the trainable and non-trainable variables but
drops every update to a metric variable (keras-team/keras#21639). There the
model must be an `ObservedModel`, which applies the updates inside the same
traced step; an `Observe` layer in a plain `keras.Model` raises instead of
reporting wrong values.
"""

import contextvars

import keras
from keras import ops

from layerwise._internals import trainers as _trainer_internals

REDUCTIONS = ("mean", "last")

# (layer, value, weight) updates deferred by `Observe` layers during one
# `ObservedModel` step on JAX; `None` outside of such a step.
_deferred_updates = contextvars.ContextVar(
    "layerwise_deferred_observations", default=None
)


@keras.saving.register_keras_serializable(package="layerwise")
class LastValue(keras.metrics.Metric):
    """A metric holding the mean of the last value it was given.

    Across replicas of a `tf.distribute` strategy, the result is the mean of
    each replica's last value.

    Args:
        name: Name of the metric.
        dtype: Dtype of the metric's variable and result.

    Example:

    >>> metric = LastValue(name="last")
    >>> metric.update_state([1.0, 3.0])
    >>> metric.update_state(5.0)
    >>> float(metric.result())
    5.0
    """

    def __init__(self, name="last_value", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.value = self.add_variable(
            shape=(), initializer="zeros", aggregation="mean", name="value"
        )

    def update_state(self, values, sample_weight=None):
        del sample_weight  # The last value is not weighted.
        self.value.assign(ops.mean(ops.cast(values, self.dtype)))

    def reset_state(self):
        self.value.assign(0.0)

    def result(self):
        return ops.cast(self.value, self.dtype)


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
    >>> model = ObservedModel(inputs, keras.layers.Dense(1)(h))
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
        if reduction == "mean":
            self.metric = keras.metrics.Mean(name=name)
        else:
            self.metric = LastValue(name=name)

    def call(self, inputs):
        value = ops.stop_gradient(inputs)
        value = self.fn(value) if self.fn is not None else ops.mean(value)
        batch_size = ops.shape(inputs)[0] if len(inputs.shape) else 1
        pending = _deferred_updates.get()
        if pending is not None:
            pending.append((self, value, batch_size))
        elif _trainer_internals.discards_updates_to(self.metric.variables[0]):
            if _trainer_internals.is_train_or_test_forward():
                raise ValueError(
                    f"Observe layer '{self.name}' cannot report its metric: "
                    "Keras' JAX trainer drops metric updates made during the "
                    "forward pass of `fit` and `evaluate`. Build the model "
                    "as `layerwise.ObservedModel(inputs, outputs)` "
                    "(or subclass it instead of `keras.Model`)."
                )
            # predict or shape inference: the scope's updates are discarded
            # and no metric is reported, so there is nothing to record.
        else:
            self.update_metric(value, batch_size)
        return inputs

    def update_metric(self, value, batch_size):
        """Folds one batch's `fn` value, of `batch_size` samples, in."""
        value = ops.mean(ops.cast(value, self.metric.dtype))
        weight = ops.cast(batch_size, self.metric.dtype)
        self.metric.update_state(value, sample_weight=weight)

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
    during `call`, hence the declaration.

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
    >>> model = ObservedModel(inputs, keras.layers.Dense(1)(h))
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
            "`observe` on a non-symbolic tensor must be called inside a "
            f"layer's `call`. Received: x of type {type(x).__name__} outside "
            "of any layer call"
        )
    for layer in owner._layers:
        if isinstance(layer, Observe) and layer.name == name:
            return layer(x)
    raise ValueError(
        f"Layer '{owner.name}' called `observe(x, {name!r})` but owns no "
        f"`Observe` layer named {name!r}. Create it in `__init__`, e.g. "
        f"`self.obs = layerwise.Observe({name!r}, fn=...)`."
    )


@keras.saving.register_keras_serializable(package="layerwise")
class ObservedModel(keras.Model):
    """A `keras.Model` whose `Observe` layers report on every backend.

    Needed on JAX only (see the module docstring); harmless elsewhere, so
    portable code can always use it. Use it as a functional model,
    `ObservedModel(inputs, outputs)`, or as the base class of a subclassed
    model.

    Example:

    >>> inputs = keras.Input((2,))
    >>> h = observe(inputs, "x_mean")
    >>> model = ObservedModel(inputs, keras.layers.Dense(1)(h))
    >>> model.compile(optimizer="sgd", loss="mse")
    >>> history = model.fit(np.ones((4, 2)), np.ones((4, 1)), verbose=0)
    >>> history.history["x_mean"]
    [1.0]
    """

    def compute_loss_and_updates(self, *args, **kwargs):
        """JAX trainer step hook: applies deferred `Observe` updates."""
        base = super().compute_loss_and_updates
        _trainer_internals.check_jax_compute_loss_and_updates(base)
        pending = []
        token = _deferred_updates.set(pending)
        try:
            loss, aux = base(*args, **kwargs)
        finally:
            _deferred_updates.reset(token)

        def apply_updates():
            for layer, value, batch_size in pending:
                layer.update_metric(value, batch_size)

        aux = _trainer_internals.with_metrics_updates(self, aux, apply_updates)
        return loss, aux
