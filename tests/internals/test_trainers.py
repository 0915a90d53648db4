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


@only_on("jax")
def test_jax_compute_loss_and_updates_signature():
    from keras.src.backend.jax.trainer import JAXTrainer

    method = JAXTrainer.compute_loss_and_updates
    params = tuple(inspect.signature(method).parameters)[1:]  # Drop self.
    assert params == _trainer_internals.JAX_COMPUTE_LOSS_AND_UPDATES_PARAMS
    source = inspect.getsource(method)
    assert "stateless_call" in source and "return_losses=True" in source
    assert "metrics_variables,\n        )" in source  # The 4-tuple aux.


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
