"""`observe` / `Observe` in a plain `keras.Model`: logged values against hand
computations on fixed weights (functional and subclassed models, `fit`,
`val_`, `evaluate`, batch logs), identity on the data path, serialization,
and the deprecated `ObservedModel`."""

import os
import re
import subprocess
import sys
import textwrap
import warnings

import keras
import numpy as np
import pytest

from layerwise.observation.observe import LastValue
from layerwise.observation.observe import Observe
from layerwise.observation.observe import ObservedModel
from layerwise.observation.observe import observe
from tests.conftest import only_on

N, BATCH = 10, 4  # Three batches, the last one partial (2 samples).
X = (np.arange(N * 3, dtype="float32").reshape(N, 3) - 12.0) / 10.0
Y = np.ones((N, 1), "float32")
KERNEL = np.array(
    [[0.5, -1.0, 0.2, 0.0], [0.3, 0.4, -0.6, 1.0], [-0.2, 0.1, 0.7, -0.3]],
    "float32",
)


@keras.saving.register_keras_serializable(package="layerwise_tests")
def squared_norm(t):
    return keras.ops.mean(keras.ops.sum(t**2, axis=-1))


def hidden_np(x):
    return np.maximum(x @ KERNEL, 0.0)


def expected(reduction, x=X):
    """The logged value of `squared_norm` of the hidden layer, by hand."""
    per_batch = [
        (squared_norm_np(hidden_np(x[i : i + BATCH])), len(x[i : i + BATCH]))
        for i in range(0, len(x), BATCH)
    ]
    if reduction == "last":
        return per_batch[-1][0]
    return sum(v * n for v, n in per_batch) / sum(n for _, n in per_batch)


def squared_norm_np(h):
    return float(np.mean(np.sum(h**2, axis=-1)))


def build(reduction="mean", kind="functional", with_observe=True):
    """Dense(4, relu) -> [observe squared_norm] -> Dense(1), kernel fixed.

    `kind`: "functional", "subclassed" or "observed_model" (deprecated).
    """
    if kind == "subclassed":
        model = Net(reduction)
        model(keras.Input((3,)))  # Builds the sublayers symbolically.
        model.hidden.kernel.assign(KERNEL)
        return model
    inputs = keras.Input((3,))
    dense = keras.layers.Dense(
        4, activation="relu", use_bias=False, name="hidden"
    )
    h = dense(inputs)
    if with_observe:
        h = observe(h, "h_norm", fn=squared_norm, reduction=reduction)
    outputs = keras.layers.Dense(1, name="head")(h)
    if kind == "observed_model":
        with pytest.warns(DeprecationWarning, match="keras.Model"):
            model = ObservedModel(inputs, outputs)
    else:
        model = keras.Model(inputs, outputs)
    dense.kernel.assign(KERNEL)
    return model


class Net(keras.Model):
    """The same model, subclassed: the `Observe` layer called in `call`."""

    def __init__(self, reduction="mean", **kwargs):
        super().__init__(**kwargs)
        self.hidden = keras.layers.Dense(4, activation="relu", use_bias=False)
        self.h_norm = Observe("h_norm", fn=squared_norm, reduction=reduction)
        self.head = keras.layers.Dense(1)

    def call(self, x):
        return self.head(self.h_norm(self.hidden(x)))


def fit(model, jit_compile, **kwargs):
    model.compile(
        optimizer=keras.optimizers.SGD(0.0), loss="mse", jit_compile=jit_compile
    )
    return model.fit(X, Y, batch_size=BATCH, shuffle=False, verbose=0, **kwargs)


@pytest.mark.parametrize("kind", ["functional", "subclassed"])
@pytest.mark.parametrize("reduction", ["mean", "last"])
def test_history_matches_hand_computation(reduction, kind, jit_compile):
    history = fit(build(reduction, kind), jit_compile, epochs=2)
    np.testing.assert_allclose(
        history.history["h_norm"], [expected(reduction)] * 2, rtol=1e-5
    )


@pytest.mark.parametrize("kind", ["functional", "subclassed"])
@pytest.mark.parametrize("reduction", ["mean", "last"])
def test_validation_logs_have_val_prefix(reduction, kind, jit_compile):
    # The training value must stay the training one: on torch a "last"
    # result once aliased the metric's variable, which validation then
    # overwrote before `History` read it.
    x_val = X[::-1] * 0.5
    history = fit(
        build(reduction, kind), jit_compile, validation_data=(x_val, Y)
    )
    np.testing.assert_allclose(
        history.history["val_h_norm"], [expected(reduction, x_val)], rtol=1e-5
    )
    np.testing.assert_allclose(
        history.history["h_norm"], [expected(reduction)], rtol=1e-5
    )


@pytest.mark.parametrize("reduction", ["mean", "last"])
def test_validation_split_keeps_training_value(reduction, jit_compile):
    x = np.concatenate([X, X[:4] * 0.5])
    y = np.ones((len(x), 1), "float32")
    epoch_ends = []
    callback = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: epoch_ends.append(dict(logs))
    )
    model = build(reduction)
    model.compile(
        optimizer=keras.optimizers.SGD(0.0), loss="mse", jit_compile=jit_compile
    )
    history = model.fit(
        x, y, batch_size=BATCH, shuffle=False, verbose=0,
        validation_split=4 / 14, callbacks=[callback],
    )
    train, val = expected(reduction), expected(reduction, X[:4] * 0.5)
    assert abs(train - val) > 0.5  # The two cannot be mistaken for each other.
    np.testing.assert_allclose(history.history["h_norm"], [train], rtol=1e-5)
    np.testing.assert_allclose(history.history["val_h_norm"], [val], rtol=1e-5)
    np.testing.assert_allclose(epoch_ends[0]["h_norm"], train, rtol=1e-5)


@pytest.mark.parametrize("kind", ["functional", "subclassed"])
def test_evaluate_returns_observed_value(kind, jit_compile):
    model = build(kind=kind)
    model.compile(loss="mse", jit_compile=jit_compile)
    results = model.evaluate(
        X, Y, batch_size=BATCH, verbose=0, return_dict=True
    )
    np.testing.assert_allclose(results["h_norm"], expected("mean"), rtol=1e-5)


def test_train_on_batch_and_test_on_batch_report(jit_compile):
    model = build()
    model.compile(
        optimizer=keras.optimizers.SGD(0.0), loss="mse", jit_compile=jit_compile
    )
    # Keras 3 resets the metrics at each `*_on_batch` call.
    for rows in (slice(0, BATCH), slice(BATCH, None)):
        logs = model.train_on_batch(X[rows], Y[rows], return_dict=True)
        np.testing.assert_allclose(
            logs["h_norm"], squared_norm_np(hidden_np(X[rows])), rtol=1e-5
        )
    tested = model.test_on_batch(X, Y, return_dict=True)
    np.testing.assert_allclose(
        tested["h_norm"], squared_norm_np(hidden_np(X)), rtol=1e-5
    )


def test_frozen_model_still_reports(jit_compile):
    model = build()
    model.trainable = False
    history = fit(model, jit_compile)
    np.testing.assert_allclose(
        history.history["h_norm"], [expected("mean")], rtol=1e-5
    )


@pytest.mark.parametrize("verbose", [1, 2])
def test_progress_bar_shows_value(capsys, verbose):
    model = build()
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    model.fit(X, Y, batch_size=BATCH, shuffle=False, verbose=verbose)
    shown = re.findall(r"h_norm: ([0-9.]+)", capsys.readouterr().out)
    assert shown
    np.testing.assert_allclose(float(shown[-1]), expected("mean"), atol=1e-4)


def test_batch_logs_are_running_means(jit_compile):
    seen = []
    callback = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: seen.append(logs["h_norm"])
    )
    fit(build(), jit_compile, callbacks=[callback])
    want = [expected("mean", X[:n]) for n in (4, 8, 10)]
    np.testing.assert_allclose(seen, want, rtol=1e-5)


def test_outputs_and_gradients_unchanged(jit_compile):
    models = [build(with_observe=w) for w in (True, False)]
    models[1].set_weights(models[0].get_weights())
    np.testing.assert_array_equal(
        models[0].predict(X, verbose=0), models[1].predict(X, verbose=0)
    )
    for model in models:
        model.compile(
            optimizer=keras.optimizers.SGD(0.1),
            loss="mse",
            jit_compile=jit_compile,
        )
        model.fit(X, Y, batch_size=BATCH, shuffle=False, verbose=0)
    for with_obs, without in zip(*(m.get_weights() for m in models)):
        np.testing.assert_array_equal(with_obs, without)


class Block(keras.layers.Layer):
    """A custom layer observing a value computed inside its `call`."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(4, activation="relu", use_bias=False)
        self.obs = Observe("inner", fn=squared_norm)

    def call(self, x):
        return observe(self.dense(x), "inner")


def test_observe_inside_custom_layer_call(jit_compile):
    inputs = keras.Input((3,))
    block = Block()
    model = keras.Model(inputs, keras.layers.Dense(1)(block(inputs)))
    block.dense.kernel.assign(KERNEL)
    history = fit(model, jit_compile)
    np.testing.assert_allclose(
        history.history["inner"], [expected("mean")], rtol=1e-5
    )


def test_observe_in_call_needs_an_owned_layer():
    class Unowned(keras.layers.Layer):
        def call(self, x):
            return observe(x, "missing")

    with pytest.raises(ValueError, match="owns no `Observe` layer named"):
        Unowned()(np.ones((2, 3), "float32"))


def test_observe_outside_a_layer_call_raises():
    with pytest.raises(ValueError, match="inside a layer's `call`") as info:
        observe(keras.ops.ones((2, 3)), "x")
    assert "\x1b" not in str(info.value)


class ObservingNet(Net):
    """`observe(h, name)` in a model's own `call`, not in a layer's."""

    def call(self, x):
        return self.head(observe(self.hidden(x), "h_norm"))


@only_on("jax")
def test_observe_in_a_model_call_on_jax_explains_the_fix():
    """Keras' JAX trainer runs a model's own `call` outside of
    `Layer.__call__`, so `observe` cannot find the model there."""
    model = ObservingNet()
    model(keras.Input((3,)))
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError) as info:
        model.fit(X, Y, verbose=0)
    message = str(info.value)
    assert "call the `Observe` layer itself (`h = self.h_norm(h)`)" in message
    assert "\x1b" not in message


@only_on("tensorflow", "torch")
def test_observe_in_a_model_call_works_on_stateful_backends():
    model = ObservingNet()
    model(keras.Input((3,)))
    model.hidden.kernel.assign(KERNEL)
    history = fit(model, jit_compile=False)
    np.testing.assert_allclose(
        history.history["h_norm"], [expected("mean")], rtol=1e-5
    )


class Looped(keras.layers.Layer):
    """A layer observing a value inside the body of `keras.ops.fori_loop`."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.obs = Observe("in_loop")

    def call(self, x):
        return keras.ops.fori_loop(0, 2, lambda i, h: self.obs(h) + 0.0, x)


@only_on("jax")
def test_observe_inside_a_jax_loop_raises_a_plain_error(jit_compile):
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(1)(Looped()(inputs)))
    model.compile(optimizer="sgd", loss="mse", jit_compile=jit_compile)
    with pytest.raises(ValueError) as info:
        model.fit(X, Y, batch_size=BATCH, verbose=0)
    message = str(info.value)
    assert "Observe layer 'in_loop' cannot report its value on JAX" in message
    assert "Observe the loop's output" in message
    assert "\x1b" not in message


@only_on("tensorflow", "torch")
def test_observe_inside_a_loop_reports_on_stateful_backends(jit_compile):
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(1)(Looped()(inputs)))
    history = fit(model, jit_compile)
    # The loop passes `x` through twice: each pass folds mean(x) in.
    np.testing.assert_allclose(
        history.history["in_loop"], [X.mean()], rtol=1e-5
    )


def test_observed_model_is_a_deprecated_alias(jit_compile):
    model = build(kind="observed_model")
    assert isinstance(model, keras.Model)
    history = fit(model, jit_compile)
    np.testing.assert_allclose(
        history.history["h_norm"], [expected("mean")], rtol=1e-5
    )


def test_file_saved_before_the_change_loads_silently():
    """`observed_model_v1.keras` was saved by the previous release (an
    `ObservedModel` with a "mean" and a "last" `Observe` layer): it loads
    without a warning and reports on every backend."""
    here = os.path.dirname(__file__)
    path = os.path.join(here, "fixtures", "observed_model_v1.keras")
    with warnings.catch_warnings():
        warnings.filterwarnings("error", ".*ObservedModel", DeprecationWarning)
        loaded = keras.models.load_model(path)
    assert isinstance(loaded, ObservedModel)
    loaded.compile(loss="mse")
    results = loaded.evaluate(X, Y, batch_size=BATCH, verbose=0, return_dict=True)
    np.testing.assert_allclose(results["h_norm"], expected("mean"), rtol=1e-5)
    np.testing.assert_allclose(results["h_last"], expected("last"), rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"name": ""}, "`name` must be a non-empty string"),
        ({"name": "a/b"}, "`name` must be a non-empty string"),
        ({"name": "x", "fn": 3}, "`fn` must be a callable"),
        ({"name": "x", "reduction": "max"}, "`reduction` must be one of"),
        ({"name": "x", "capture": 1}, "`capture` must be a bool"),
    ],
)
def test_invalid_arguments_raise(kwargs, error):
    with pytest.raises((TypeError, ValueError), match=error):
        Observe(**kwargs)


def test_last_value_metric_keeps_last_mean():
    metric = LastValue()
    metric.update_state([1.0, 3.0])
    assert float(metric.result()) == 2.0
    metric.update_state(5.0)
    assert float(metric.result()) == 5.0
    metric.reset_state()
    assert float(metric.result()) == 0.0


@pytest.mark.parametrize("reduction", ["mean", "last"])
def test_save_load_round_trip(tmp_path, reduction):
    model = build(reduction)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is type(model)
    layer = loaded.get_layer("h_norm")
    assert (layer.fn, layer.reduction) == (squared_norm, reduction)
    history = fit(loaded, jit_compile=False)
    np.testing.assert_allclose(
        history.history["h_norm"], [expected(reduction)], rtol=1e-5
    )


def test_lambda_fn_is_refused_at_load_under_safe_mode(tmp_path):
    inputs = keras.Input((3,))
    outputs = observe(inputs, "m", fn=lambda t: keras.ops.mean(t))
    path = str(tmp_path / "model.keras")
    with pytest.warns(UserWarning, match="lambda"):
        keras.Model(inputs, outputs).save(path)
    with pytest.raises(ValueError, match="lambda"):
        keras.models.load_model(path)
    loaded = keras.models.load_model(path, safe_mode=False)
    assert callable(loaded.get_layer("m").fn)


@only_on("tensorflow")
def test_tensorboard_receives_value(tmp_path):
    pytest.importorskip("tensorboard")
    import tensorflow as tf

    fit(
        build(),
        jit_compile=False,
        callbacks=[keras.callbacks.TensorBoard(log_dir=str(tmp_path))],
    )
    tags = set()
    for event_file in (tmp_path / "train").glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(event_file)):
            tags.update(value.tag for value in event.summary.value)
    assert "epoch_h_norm" in tags


_MIRRORED_SCRIPT = textwrap.dedent(
    """
    import numpy as np, tensorflow as tf
    tf.config.set_logical_device_configuration(
        tf.config.list_physical_devices("CPU")[0],
        [tf.config.LogicalDeviceConfiguration()] * 2,
    )
    import keras
    from tests.observation import test_observe as t
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        model = t.build()
        model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    history = model.fit(t.X, t.Y, batch_size=t.BATCH, shuffle=False, verbose=0)
    np.testing.assert_allclose(
        history.history["h_norm"], [t.expected("mean")], rtol=1e-5)
    print("OK", strategy.num_replicas_in_sync)
    """
)


@only_on("tensorflow")
def test_mirrored_strategy_over_two_cpus():
    """Runs in its own process: logical devices must precede TF's start."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    result = subprocess.run(
        [sys.executable, "-c", _MIRRORED_SCRIPT],
        check=False,
        cwd=root,
        env={**os.environ, "KERAS_BACKEND": "tensorflow"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "OK 2" in result.stdout


_DATA_PARALLEL_SCRIPT = textwrap.dedent(
    """
    import os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    import numpy as np, keras
    from tests.observation import test_observe as t
    devices = keras.distribution.list_devices()
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    for jit_compile in (False, True):
        history = t.fit(t.build(), jit_compile, validation_data=(t.X, t.Y))
        for key in ("h_norm", "val_h_norm"):
            np.testing.assert_allclose(
                history.history[key], [t.expected("mean")], rtol=1e-5)
    print("OK", len(devices))
    """
)


@only_on("jax")
def test_jax_data_parallel_over_two_cpus():
    """Runs in its own process: the device count precedes JAX's start."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    result = subprocess.run(
        [sys.executable, "-c", _DATA_PARALLEL_SCRIPT],
        check=False,
        cwd=root,
        env={**os.environ, "KERAS_BACKEND": "jax"},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "OK 2" in result.stdout


def test_custom_loop_example_runs():
    from examples import custom_loop_progbar

    logs = custom_loop_progbar.main(epochs=1, batch_size=256)
    assert {"h_norm", "h_active", "loss"} <= set(logs)
