"""The transforms' shared saving: configs as the engine before the shared
base wrote them (golden dicts), and the checks of wrapped functions."""

import re

import keras
import pytest

import layerwise as lw


@keras.saving.register_keras_serializable(package="tests_serializable")
def _halve(update, grad, weights):
    return update * 0.5


@keras.saving.register_keras_serializable(package="tests_serializable")
def _twice(grad, variable):
    return grad * 2.0


@keras.saving.register_keras_serializable(package="tests_serializable")
def _identity(weights):
    return weights


def _function(name):
    return {"module": "builtins", "class_name": "function", "config": f"tests_serializable>{name}",
            "registered_name": "function"}


def _saved(module, name, config):
    return {"module": f"layerwise.optim.{module}", "class_name": name, "config": config,
            "registered_name": f"layerwise>{name}"}


# Written by commit cb5de24, before `serializable` existed.
GOLDEN = [
    (lw.trust_ratio(0.5, 1e-6, 0.1),
     "TrustRatio(trust_coefficient=0.5, eps=1e-06, min_norm=0.1)",
     _saved("update_transforms", "TrustRatio",
            {"trust_coefficient": 0.5, "eps": 1e-06, "min_norm": 0.1})),
    (lw.cautious(), "Cautious()", _saved("update_transforms", "Cautious", {})),
    (lw.per_variable_update(_halve), "per_variable_update('_halve')",
     _saved("update_transforms", "PerVariableUpdate", {"fn": _function("_halve")})),
    (lw.chain(lw.scale(2.0), lw.per_variable(_twice)),
     "chain(Scale(factor=2.0), per_variable('_twice'))",
     _saved("transforms", "Chain", {"transforms": [
         _saved("transforms", "Scale", {"factor": 2.0}),
         _saved("transforms", "PerVariable", {"fn": _function("_twice")}),
     ]})),
    (lw.Projection(_identity), "Projection('_identity')",
     _saved("projections", "Projection", {"fn": _function("_identity")})),
]


def test_configs_and_reprs_are_the_ones_saved_before():
    for transform, text, saved in GOLDEN:
        assert repr(transform) == text
        assert keras.saving.serialize_keras_object(transform) == saved
        assert repr(keras.saving.deserialize_keras_object(saved)) == text


def test_wrapped_functions_are_checked_when_wrapped():
    for wrap, signature in (
        (lw.per_variable, "(gradient, variable) -> gradient"),
        (lw.per_variable_update, "(update, gradient, weights) -> update"),
        (lw.Projection, "weights -> weights"),
    ):
        for not_a_function in (3, lw.GradientTransform):
            message = re.escape(f"must be a callable `{signature}`. Received")
            with pytest.raises(TypeError, match=message):
                wrap(not_a_function)
        with pytest.raises(TypeError, match=r"must be a callable taking \d positional"):
            wrap(lambda a, b, c, d: a)
