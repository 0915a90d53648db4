"""Which variables a rule's `match` selects."""

import keras
import numpy as np
import pytest

import layerwise as lw
from layerwise.optim import selectors


def _nested_model():
    inputs = keras.Input((4,))
    encoder = keras.Sequential(
        [keras.layers.Dense(3, name="d1"), keras.layers.LayerNormalization(name="ln")],
        name="encoder",
    )
    x = keras.layers.Dense(3, name="pre_encoder")(inputs)
    x = encoder(x)
    outputs = keras.layers.Dense(2, name="head")(x)
    return keras.Model(inputs, outputs)


def _selected(match, model):
    selector = selectors.as_selector(match)
    return [v.path for v in model.variables if selector.matches(v)]


def test_regex_uses_fullmatch_on_path():
    model = _nested_model()
    assert _selected("encoder/.*", model) == [
        "encoder/d1/kernel", "encoder/d1/bias", "encoder/ln/gamma", "encoder/ln/beta"
    ]
    assert _selected("kernel", model) == []
    assert _selected(".*/kernel", model) == [
        "pre_encoder/kernel", "encoder/d1/kernel", "head/kernel"
    ]


def test_layer_selects_nested_variables():
    model = _nested_model()
    assert _selected(model.get_layer("encoder"), model) == [
        "encoder/d1/kernel", "encoder/d1/bias", "encoder/ln/gamma", "encoder/ln/beta"
    ]


def test_variable_predicate_and_list():
    model = _nested_model()
    head_kernel = model.get_layer("head").kernel
    assert _selected(head_kernel, model) == ["head/kernel"]
    assert _selected(lambda v: v.path.endswith("beta"), model) == ["encoder/ln/beta"]
    assert _selected([head_kernel, "pre_encoder/bias"], model) == [
        "pre_encoder/bias", "head/kernel"
    ]


def test_layer_selector_saves_as_paths():
    model = _nested_model()
    saved = selectors.serialize_selector(selectors.as_selector(model.get_layer("head")))
    restored = selectors.deserialize_selector(saved)
    assert isinstance(restored, selectors.VariablePaths)
    assert _selected(restored, model) == ["head/kernel", "head/bias"]


@pytest.mark.parametrize(
    "match, error, message",
    [
        (3, TypeError, "`match` must be"),
        (None, TypeError, "`match` must be"),
        ([], ValueError, "empty"),
        ("encoder/(", ValueError, "regular expression"),
        (lambda a, b: True, TypeError, "1 positional"),
        (np.float32(1.0), TypeError, "`match` must be"),
    ],
)
def test_unknown_match_types_fail_early(match, error, message):
    with pytest.raises(error, match=message):
        lw.Rule(match)


def _sequential():
    return keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(3, name="a"), keras.layers.Dense(2, name="d")]
    )


def test_saved_paths_follow_keras_sequential_scope_on_reload(tmp_path):
    # Keras scopes a Sequential's variables under its name when it is given
    # an `Input` (`sequential/a/kernel`) and not once reloaded (`a/kernel`).
    x = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
    y = np.random.default_rng(1).normal(size=(8, 2)).astype("float32")
    model = _sequential()
    assert model.weights[0].path.endswith("/a/kernel")
    rules = [lw.Rule(model.layers[0], lr_scale=0.25, name="a")]
    model.compile(lw.LayerwiseOptimizer(keras.optimizers.Adam(0.01), rules), "mse")
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert loaded.weights[0].path == "a/kernel"
    rows = {row["path"]: row for row in loaded.optimizer.summary_rows()}
    assert rows["a/kernel"]["rules"] == ["a"] and rows["a/kernel"]["lr_scale"] == 0.25
    assert rows["d/kernel"]["rules"] == []
    for m in (model, loaded):
        m.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False)
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


def test_saved_paths_prefer_exact_and_refuse_ambiguous_scopes():
    exact = selectors.VariablePaths(["enc/a/kernel", "a/kernel"])
    exact.bind(["enc/a/kernel", "a/kernel", "x/a/kernel"])
    assert exact._path_set == {"enc/a/kernel", "a/kernel"}
    ambiguous = selectors.VariablePaths(["a/kernel"])
    ambiguous.bind(["s1/a/kernel", "s2/a/kernel"])
    assert ambiguous._path_set == {"a/kernel"}
    scoped = selectors.VariablePaths(["a/kernel"])
    scoped.bind(["sequential/a/kernel", "b/kernel"])
    assert scoped._path_set == {"a/kernel", "sequential/a/kernel"}
