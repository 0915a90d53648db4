"""`capture`: values equal a sub-model's (or `return_attention_scores`), in
eager and compiled predict, and the model is left untouched outside."""

import keras
import numpy as np
import pytest

from layerwise.observation.capture import capture
from layerwise.observation.observe import observe
from tests.conftest import JIT_MODES

X = np.random.default_rng(0).normal(size=(10, 5, 8)).astype("float32")
BATCH = 4  # Three predict steps, the last one partial.

# (run_eagerly, jit_compile): eager predict, then every compiled mode.
MODES = [(True, False)] + [(False, jit) for jit in JIT_MODES]


@pytest.fixture(params=MODES, ids=lambda m: "eager" if m[0] else f"jit={m[1]}")
def mode(request):
    return request.param


def build(mode=(False, False)):
    inputs = keras.Input((5, 8))
    h = keras.layers.MultiHeadAttention(2, 4, name="mha")(inputs, inputs)
    h = observe(h, "attn_out", capture=True)
    h = keras.layers.Dense(6, activation="relu", name="hidden")(h)
    outputs = keras.layers.Dense(3, name="head")(h)
    model = keras.Model(inputs, outputs)
    model.compile(run_eagerly=mode[0], jit_compile=mode[1])
    return model


def predict(model, x=X):
    return model.predict(x, batch_size=BATCH, verbose=0)


def test_layer_output_matches_submodel(mode):
    model = build(mode)
    with capture(model, names=["hidden"]) as cap:
        predict(model)
    submodel = keras.Model(model.inputs, model.get_layer("hidden").output)
    np.testing.assert_allclose(
        cap["hidden"], predict(submodel), rtol=1e-6, atol=1e-6
    )


def test_attention_scores_match_return_attention_scores(mode):
    model = build(mode)
    with capture(model, names=["mha:attention_scores"]) as cap:
        predict(model)
    _, scores = model.get_layer("mha")(X, X, return_attention_scores=True)
    assert cap["mha:attention_scores"].shape == (10, 2, 5, 5)
    np.testing.assert_allclose(
        cap["mha:attention_scores"],
        keras.ops.convert_to_numpy(scores),
        atol=1e-6,
    )


def test_nested_sublayer_output_by_path(mode):
    model = build(mode)
    mha = model.get_layer("mha")
    with capture(model, names=["mha/query"]) as cap:
        predict(model)
    want = keras.ops.convert_to_numpy(mha.query_dense(X))
    np.testing.assert_allclose(cap["mha/query"], want, rtol=1e-6, atol=1e-6)


def test_default_names_are_observe_layers_with_capture(mode):
    model = build(mode)
    with capture(model) as cap:
        predict(model)
    submodel = keras.Model(model.inputs, model.get_layer("mha").output)
    assert cap.names == ["attn_out"]
    np.testing.assert_allclose(
        cap["attn_out"], predict(submodel), rtol=1e-6, atol=1e-6
    )


def test_predict_outputs_unchanged(mode):
    model = build(mode)
    before = predict(model)
    with capture(model, names=["hidden", "mha:attention_scores"]):
        during = predict(model)
    np.testing.assert_allclose(during, before, rtol=1e-5, atol=1e-6)


def test_values_concatenate_across_predict_calls():
    model = build()
    with capture(model, names=["hidden"]) as cap:
        predict(model, X[:3])
        predict(model, X[3:])
    submodel = keras.Model(model.inputs, model.get_layer("hidden").output)
    np.testing.assert_allclose(
        cap["hidden"], predict(submodel), rtol=1e-6, atol=1e-6
    )


def test_exit_restores_model_and_its_compiled_predict():
    model = build()
    predict(model)
    own_function = model.predict_function
    with capture(model, names=["hidden", "mha:attention_scores"]):
        predict(model)
    assert model.predict_function is own_function
    assert "predict" not in vars(model) and "predict_step" not in vars(model)
    assert "call" not in vars(model.get_layer("mha"))
    assert "call" not in vars(model.get_layer("hidden"))


@pytest.mark.parametrize(
    "names, error",
    [
        (["nope"], "must name layers of the model"),
        (["hidden:attention_scores"], "applies to MultiHeadAttention"),
        (["mha:weights"], "'<layer>:attention_scores'"),
        ("hidden", "`names` must be a list of strings"),
    ],
)
def test_invalid_names_raise(names, error):
    with pytest.raises((TypeError, ValueError), match=error):
        capture(build(), names=names)


def test_no_capture_layer_without_names_raises():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    with pytest.raises(ValueError, match="`names` must be given"):
        capture(model)


def test_layer_called_twice_raises():
    inputs = keras.Input((3,))
    shared = keras.layers.Dense(3, name="shared")
    model = keras.Model(inputs, shared(shared(inputs)))
    with (
        pytest.raises(ValueError, match="called more than once"),
        capture(model, names=["shared"]),
    ):
        model.predict(np.ones((2, 3)), verbose=0)
