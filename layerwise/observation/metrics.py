"""How an `Observe` layer's values reach `fit`'s logs: its metric.

Keras' trainers report the metrics of every sublayer (progress bar,
`History`, `val_` logs, `evaluate`), computed inside the train/test step. An
`Observe` layer owns one, fed with a value per forward pass.

On TensorFlow and PyTorch the forward pass of `fit` runs statefully: the
value is folded into the metric at once. On JAX, Keras runs it through
`stateless_call`, whose scope threads the trainable and non-trainable
variables only, and then updates the metrics in a second scope of the same
step, which maps the metric variables (keras-team/keras#21639). The metric
therefore records the value during the forward pass and folds it in when
the trainer asks for its `result()` within that second scope. The value is
computed under `stop_gradient`, so JAX gives it to the step itself, not to
the gradient computation it was found in: it may be used after
`jax.value_and_grad` returns, in the same traced step.
"""

import weakref

import keras
from keras import ops

from layerwise._internals import trainers as _trainer_internals


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
        # A copy, never the variable's own storage: on torch `assign`
        # writes in place, and `fit` keeps the training result while
        # validation reuses the metric.
        return ops.copy(ops.cast(self.value, self.dtype))


class _Recorded:
    """Values recorded during one forward pass, waiting for the metrics phase.

    `scope` refers weakly to the forward pass's `StatelessScope`: values from
    an earlier forward pass whose step never folded them (a custom
    `compute_metrics`) are dropped rather than mixed with the next one's.
    """

    def __init__(self):
        self.scope = None
        self.values = []

    def add(self, scope, value, weight):
        if self.scope is None or self.scope() is not scope:
            self.scope = weakref.ref(scope)
            self.values = []
        self.values.append((value, weight))

    def take(self):
        values, self.values, self.scope = self.values, [], None
        return values


class _Observation:
    """Mixin for the metric of an `Observe` layer (see the module docstring).

    `record(value, weight)` folds a batch's value in where the metric's
    variables can be assigned, and keeps it for `result()` during the
    forward pass of JAX's `fit`/`evaluate`. `name` is the `Observe` layer's.
    """

    def __init__(self, name, dtype=None):
        super().__init__(name=name, dtype=dtype)
        self._recorded = _Recorded()

    def record(self, value, weight):
        variable = self.variables[0]
        if not _trainer_internals.discards_updates_to(variable):
            self._fold(value, weight)
        elif _trainer_internals.is_train_or_test_forward():
            scope = _trainer_internals.current_stateless_scope()
            self._recorded.add(scope, value, weight)
        # Otherwise `predict` or shape inference: no metric is reported.

    def _fold(self, value, weight):
        value = ops.mean(ops.cast(value, self.dtype))
        self.update_state(value, sample_weight=ops.cast(weight, self.dtype))

    def result(self):
        # Keras computes results in the step's metrics phase, whose scope
        # maps this metric's variables and keeps what is assigned to them.
        if self._recorded.values and _trainer_internals.collects_updates_to(
            self.variables[0]
        ):
            recorded = self._recorded.take()
            if any(_trainer_internals.escaped_its_trace(v) for v, _ in recorded):
                raise ValueError(_escaped_message(self.name))
            for value, weight in recorded:
                self._fold(value, weight)
        return super().result()

    def reset_state(self):
        self._recorded.take()
        super().reset_state()


class ObservedMean(_Observation, keras.metrics.Mean):
    """The metric of an `Observe` layer with `reduction="mean"`."""


class ObservedLastValue(_Observation, LastValue):
    """The metric of an `Observe` layer with `reduction="last"`."""


def _escaped_message(name):
    return (
        f"Observe layer '{name}' cannot report its value on JAX: it was "
        "called inside a function that JAX traces on its own, the body of "
        "a loop (`keras.ops.scan`, `fori_loop`, `while_loop`, the cell of a "
        "`keras.layers.RNN`) or a rematerialized call. A value computed "
        "there can leave that function only through its outputs, and an "
        "`Observe` layer has no output of its own. Observe the loop's "
        "output (outside the loop) instead, or return the value from the "
        "loop body and observe it there. TensorFlow and PyTorch update "
        "metrics in place and report from inside loops."
    )
