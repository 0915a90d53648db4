"""Fails loudly if the Keras internals in `layerwise/_internals/trainers.py`
move or change meaning."""

import inspect

import keras
import numpy as np

from layerwise._internals import trainers as _trainer_internals
from tests.conftest import only_on


def test_calling_layer_is_the_layer_whose_call_runs():
    seen = []

    class Probe(keras.layers.Layer):
        def call(self, x):
            seen.append(_trainer_internals.calling_layer())
            return x

    probe = Probe()
    probe(np.ones((1, 2), "float32"))
    assert seen == [probe]
    assert _trainer_internals.calling_layer() is None


def test_discards_updates_only_inside_an_unmapping_stateless_scope():
    variable = keras.Variable(0.0)
    other = keras.Variable(1.0)
    assert not _trainer_internals.discards_updates_to(variable)
    with keras.StatelessScope(state_mapping=[(variable, 0.0)]):
        assert not _trainer_internals.discards_updates_to(variable)
        assert _trainer_internals.discards_updates_to(other)


def test_train_or_test_forward_means_collecting_losses():
    assert not _trainer_internals.is_train_or_test_forward()
    with keras.StatelessScope(collect_losses=True):
        assert _trainer_internals.is_train_or_test_forward()
    with keras.StatelessScope():
        assert not _trainer_internals.is_train_or_test_forward()


def test_nested_layers_reach_sublayers():
    inputs = keras.Input((4, 2))
    mha = keras.layers.MultiHeadAttention(1, 2, name="mha")
    model = keras.Model(inputs, mha(inputs, inputs))
    layers = _trainer_internals.nested_layers(model)
    assert mha in layers and mha.query_dense in layers


def test_collects_updates_only_inside_a_mapping_stateless_scope():
    variable = keras.Variable(0.0)
    other = keras.Variable(1.0)
    assert not _trainer_internals.collects_updates_to(variable)
    with keras.StatelessScope(state_mapping=[(variable, 0.0)]):
        assert _trainer_internals.collects_updates_to(variable)
        assert not _trainer_internals.collects_updates_to(other)


def test_sublayers_are_the_directly_tracked_layers():
    class Outer(keras.layers.Layer):
        def __init__(self):
            super().__init__()
            self.first = keras.layers.Dense(1)
            self.second = keras.layers.Dense(1)

    outer = Outer()
    assert _trainer_internals.sublayers(outer) == [outer.first, outer.second]


class _ProbeMetric(keras.metrics.Mean):
    def __init__(self, events):
        super().__init__(name="probe")
        self.note = events.append  # A list attribute would be copied.

    def result(self):
        mapped = _trainer_internals.collects_updates_to(self.variables[0])
        self.note(("result", mapped))
        return super().result()


class _ProbeLayer(keras.layers.Layer):
    def __init__(self, events):
        super().__init__()
        self.note = events.append
        self.metric = _ProbeMetric(events)

    def call(self, x):
        if _trainer_internals.current_stateless_scope() is not None:
            forward = _trainer_internals.is_train_or_test_forward()
            discards = _trainer_internals.discards_updates_to(
                self.metric.variables[0]
            )
            self.note(("forward", forward and discards))
        return x


@only_on("jax")
def test_jax_step_reports_metrics_after_the_forward_in_a_mapping_scope(
    jit_compile,
):
    """What `Observe` relies on: JAX's train and test steps run the forward
    pass in a scope that collects losses but drops metric updates, then
    compute each metric's `result()` in a scope that maps the metric's
    variables and keeps what is assigned to them."""
    events = []
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(1)(_ProbeLayer(events)(inputs)))
    model.compile(optimizer="sgd", loss="mse", jit_compile=jit_compile)
    x, y = np.ones((4, 2), "float32"), np.ones((4, 1), "float32")
    for run in (model.fit, model.evaluate):
        events.clear()
        run(x, y, batch_size=4, verbose=0)
        # (Shape inference may call the layer first, in a scope of its own.)
        start = events.index(("forward", True))
        assert events[start : start + 2] == [("forward", True), ("result", True)], (
            run,
            events,
        )


@only_on("jax")
def test_jax_stop_gradient_values_outlive_value_and_grad(jit_compile):
    """A value computed under `stop_gradient` inside `jax.value_and_grad`
    belongs to the enclosing step: usable after the gradient returns. One
    kept from a `lax.scan` body is recognized as escaped."""
    import jax

    kept = []

    def loss(w):
        kept.append(jax.lax.stop_gradient(jax.numpy.mean(w**2)))
        return jax.numpy.sum(w)

    def step(w):
        _, grad = jax.value_and_grad(loss)(w)
        assert not _trainer_internals.escaped_its_trace(kept[-1])
        return grad, kept[-1] * 2.0

    def scanned(w):
        def body(carry, _):
            kept.append(carry * 1.0)
            return carry, None

        jax.lax.scan(body, w, None, length=2)
        assert _trainer_internals.escaped_its_trace(kept[-1])
        return w

    run = jax.jit(step) if jit_compile else step
    _, doubled = run(jax.numpy.full((3,), 2.0))
    assert float(doubled) == 8.0
    (jax.jit(scanned) if jit_compile else scanned)(jax.numpy.ones(()))


def test_escaped_its_trace_is_false_off_jax_and_for_plain_values():
    assert not _trainer_internals.escaped_its_trace(keras.ops.ones(()))
    assert not _trainer_internals.escaped_its_trace(np.ones(()))


def test_check_before_trace_runs_symbolically_on_jax_only():
    calls = []

    def fn(x):
        calls.append(type(x).__name__)
        return keras.ops.add(x, 1.0)

    out = _trainer_internals.check_before_trace(fn, keras.KerasTensor((2, 3), "float32"))
    if keras.backend.backend() == "jax":
        assert tuple(out.shape) == (2, 3) and len(calls) == 1
    else:
        assert out is None and calls == []


def test_optimizer_value_reader_reads_the_trainer_state():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    seen = []

    class Reader(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.read = _trainer_internals.optimizer_value_reader(
                model, [model.optimizer.iterations]
            )

        def on_train_batch_end(self, batch, logs=None):
            seen.append(int(keras.ops.convert_to_numpy(self.read()[0])))

    model.fit(np.ones((8, 2)), np.ones((8, 1)), batch_size=2, verbose=0, callbacks=[Reader()])
    assert seen == [1, 2, 3, 4]


def test_make_train_function_with_runs_the_wrapped_step(jit_compile):
    """TensorFlow and JAX take `model.train_step` when the function is made,
    so the wrapped step runs inside it, and each made function traces on
    its own (JAX's jit caches traces by function: a shared trace would skip
    the second wrapper); torch looks the step up at each call, so there the
    wrapper around the whole function is what runs. The model is left as
    it was."""
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse", jit_compile=jit_compile)
    model.make_train_function()
    original = model.train_function
    seen = []

    def wrap_as(tag):
        def wrap(function):
            kind = "step" if inspect.ismethod(function) else "function"

            def wrapped(*args, **kwargs):
                seen.append((tag, kind))
                return function(*args, **kwargs)

            return wrapped

        return wrap

    first = _trainer_internals.make_train_function_with(model, wrap_as("first"))
    second = _trainer_internals.make_train_function_with(model, wrap_as("second"))
    assert model.train_function is original
    assert "train_step" not in vars(model)
    x, y = np.ones((4, 3), "float32"), np.ones((4, 2), "float32")
    for function in (first, second):
        model.train_function = function
        model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    model.train_function = original
    assert ("first", "function") in seen and ("second", "function") in seen
    steps = {tag for tag, kind in seen if kind == "step"}
    assert steps == (set() if keras.backend.backend() == "torch" else {"first", "second"})


def test_write_back_state_lets_a_callback_change_variables_mid_epoch(jit_compile):
    """After `write_back_state`, what a callback assigns in the middle of
    an epoch is what the next step trains on (JAX's `fit` re-reads its
    state from the variables); LISA relies on it."""
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False)])
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse", jit_compile=jit_compile)

    class Reset(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch == 2:
                _trainer_internals.write_back_state(self.model)
                self.model.layers[0].kernel.assign(np.full((1, 1), 7.0, "float32"))

    model.fit(np.ones((4, 1)), np.ones((4, 1)), batch_size=1, verbose=0, callbacks=[Reset()])
    assert float(keras.ops.convert_to_numpy(model.layers[0].kernel)[0, 0]) == 7.0


def test_taken_into_step_state_during_a_jax_fit_only(jit_compile):
    """JAX's `fit` empties the model's and the optimizer's variables while
    its steps run; another model's variables keep their values; outside a
    step, and on the other backends, nothing is taken."""
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    other = keras.Variable(np.ones(2, "float32"))
    seen = []

    class Probe(keras.optimizers.SGD):
        def stateless_apply(self, optimizer_variables, grads, trainable_variables):
            seen.append([_trainer_internals.taken_into_step_state(v)
                         for v in (self.iterations, *model.trainable_variables, other)])
            return super().stateless_apply(optimizer_variables, grads, trainable_variables)

    model.compile(optimizer=Probe(), loss="mse", jit_compile=jit_compile)
    model.fit(np.ones((2, 2)), np.ones((2, 1)), batch_size=2, verbose=0)
    if keras.backend.backend() == "jax":
        assert seen == [[True, True, True, False]]
    else:
        assert seen == []  # TensorFlow's and torch's trainers call `apply`.
    assert not any(_trainer_internals.taken_into_step_state(v)
                   for v in (model.optimizer.iterations, *model.trainable_variables))
