"""Projections: Keras' own constraints, and callables wrapped."""

import keras
import numpy as np
import pytest

import layerwise as lw

W = np.array([[3.0, 0.1], [4.0, 0.2], [0.0, -0.3]], "float32")


def _numpy(x):
    return np.array(keras.ops.convert_to_numpy(x))


@pytest.mark.parametrize("axis", [0, 1, (0, 1)])
def test_max_norm_equals_keras_max_norm(axis):
    want = keras.constraints.MaxNorm(2.0, axis=list(axis) if isinstance(axis, tuple) else axis)
    np.testing.assert_array_equal(_numpy(lw.max_norm(2.0, axis)(W)), _numpy(want(W)))
    norms = np.sqrt(np.sum(W.astype("float64") ** 2, axis=axis, keepdims=True))
    np.testing.assert_allclose(
        _numpy(lw.max_norm(2.0, axis)(W)), W * np.minimum(norms, 2.0) / (norms + 1e-7), rtol=1e-6
    )


@pytest.mark.parametrize("axis", [0, 1])
def test_unit_norm_gives_unit_norms(axis):
    out = _numpy(lw.unit_norm(axis)(W))
    np.testing.assert_allclose(np.linalg.norm(out, axis=axis), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(out, _numpy(keras.constraints.UnitNorm(axis)(W)))


BAD_ARGUMENTS = [
    (lambda: lw.max_norm(0.0), "max_value"),
    (lambda: lw.max_norm(1.0, axis="0"), "axis"),
    (lambda: lw.unit_norm(axis=None), "axis"),
    (lambda: lw.Projection(3), "callable"),
    (lambda: lw.Projection(lambda a, b: a), "1 positional"),
    (lambda: lw.Rule(".*", project=[3]), "projection"),
    (lambda: lw.Rule(".*", frozen=True, project=[lw.unit_norm()]), "frozen"),
    (lambda: lw.Rule(".*", frozen=True, update=[lw.cautious()]), "frozen"),
]


def test_bad_arguments_fail_early():
    # One test for all cases: the suite's per-test reset costs more than they do.
    for make, message in BAD_ARGUMENTS:
        with pytest.raises((ValueError, TypeError), match=message):
            make()


@keras.saving.register_keras_serializable(package="tests_projections")
def _clip_to_unit_box(w):
    return keras.ops.clip(w, -1.0, 1.0)


def test_rule_with_projections_round_trips():
    rule = lw.Rule(
        ".*kernel",
        project=[lw.max_norm(2.0, axis=1), _clip_to_unit_box, keras.constraints.NonNeg()],
        update=[lw.clip_update(1.0)],
        name="k",
    )
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(rule))
    assert repr(restored) == repr(rule)
    assert [type(p).__name__ for p in restored.project] == ["MaxNorm", "Projection", "NonNeg"]
    assert "project=[MaxNorm(max_value=2.0, axis=1), Projection('_clip_to_unit_box'), NonNeg()]" in repr(rule)
    value = W
    for p in restored.project:
        value = p(value)
    by_hand = keras.constraints.MaxNorm(2.0, axis=1)(W)
    by_hand = keras.constraints.NonNeg()(keras.ops.clip(by_hand, -1.0, 1.0))
    np.testing.assert_array_equal(_numpy(value), _numpy(by_hand))


def test_rule_config_without_update_or_project_loads():
    """Files saved before update transforms and projections existed."""
    config = lw.Rule(".*", lr_scale=0.5, name="r").get_config()
    del config["update"], config["project"]
    rule = lw.Rule.from_config(config)
    assert rule.update == () and rule.project == ()
