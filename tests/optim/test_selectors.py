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
