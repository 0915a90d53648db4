"""Fails loudly if Keras moves an internal that `layerwise` relies on.

Every private name `layerwise/_internals/optimizers.py` touches is pinned
here by its signature (or type), not only by its existence; if one of these
fails after a Keras upgrade, adapt that module (and only that module).
"""

import inspect

import keras
import numpy as np
import pytest

from layerwise._internals import optimizers as internals


def _params(method):
    return tuple(inspect.signature(method).parameters)


@pytest.mark.parametrize(
    "method, params",
    [
        ("_backend_update_step", ("grads", "trainable_variables", "learning_rate")),
        ("_apply_weight_decay", ("variables",)),
        ("_clip_gradients", ("grads",)),
        ("_use_weight_decay", ("variable",)),
        ("_get_current_learning_rate", ()),
        ("_untrack_variable", ("variable",)),
        ("_overwrite_variables_directly_with_gradients", ("grads", "vars")),
        ("_check_variables_are_known", ("variables",)),
        ("_var_key", ("variable",)),
        ("exclude_from_weight_decay", ("var_list", "var_names")),
    ],
)
def test_optimizer_private_method_signatures(method, params):
    bound = getattr(keras.optimizers.Adam(), method, None)
    assert callable(bound), f"keras.optimizers.Optimizer.{method} moved"
    assert _params(bound) == params, (
        f"keras.optimizers.Optimizer.{method} now takes {_params(bound)}; "
        "update layerwise/_internals/optimizers.py"
    )


def test_muon_routing_method_signature():
    muon = keras.optimizers.Muon()
    assert _params(muon._should_use_adamw) == ("variable",)
    assert {"weight_decay", "adam_weight_decay", "exclude_layers", "exclude_embeddings"} <= set(
        muon.get_config()
    )


def test_optimizer_state_attributes():
    opt = keras.optimizers.SGD(0.1)
    assert isinstance(opt._iterations, keras.Variable)
    assert isinstance(opt._learning_rate, keras.Variable)
    assert isinstance(opt._variables, list)
    assert callable(opt._tracker.add_to_store)
    opt.build([keras.Variable([1.0])])
    assert isinstance(opt._trainable_variables, list)


def test_decay_exclusion_attributes():
    opt = keras.optimizers.AdamW(weight_decay=0.1)
    v = keras.Variable([1.0], name="bias")
    opt.exclude_from_weight_decay(var_list=[v], var_names=["gamma"])
    keys, pattern = internals.decay_exclusion(opt)
    assert keys == {opt._var_key(v)}
    assert pattern.pattern == "gamma"
    other = keras.optimizers.AdamW(weight_decay=0.1)
    internals.copy_decay_exclusion(opt, other)
    assert not other._use_weight_decay(v)


def test_weight_decay_at_a_given_rate_uses_the_optimizer_rules():
    """`apply_weight_decay` runs the optimizer's own decay (here Muon's
    routing) with the rate it is given, and restores the optimizer."""
    muon = keras.optimizers.Muon(1.0, weight_decay=0.5, adam_weight_decay=0.25)
    matrix = keras.Variable(np.ones((4, 4), "float32"), name="w")
    vector = keras.Variable(np.ones(4, "float32"), name="b")
    muon.build([matrix, vector])
    internals.apply_weight_decay(muon, [matrix, vector], keras.ops.convert_to_tensor(0.1))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(matrix), 0.95, rtol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(vector), 0.975, rtol=1e-6)
    assert "_get_current_learning_rate" not in vars(muon)
    assert float(muon.learning_rate) == 1.0
    assert internals.decay_coefficient(muon, matrix) == 0.5
    assert internals.decay_coefficient(muon, vector) == 0.25
    assert internals.update_rule(muon, vector) == "Muon (AdamW path)"


def test_nadam_step_state_is_found():
    opt = keras.optimizers.Nadam()
    opt.build([keras.Variable([1.0, 2.0])])
    state = internals.step_state(opt)
    assert [v is opt._u_product for v in state] == [True]
    assert internals.step_state(keras.optimizers.Adam()) == []


def test_track_step_state_adds_untracked_variables():
    opt = keras.optimizers.Nadam()
    with keras.src.utils.tracking.DotNotTrackScope():
        opt.build([keras.Variable([1.0, 2.0])])
    assert not any(v is opt._u_product for v in opt.variables)
    internals.track_step_state(opt)
    assert any(v is opt._u_product for v in opt.variables)


def test_built_variables_and_creation_scope():
    variables = [keras.Variable([1.0, 2.0]), keras.Variable([3.0])]
    opt = keras.optimizers.Adam()
    opt.build(variables)
    assert internals.built_variables(opt) == variables
    with internals.variable_creation_scope(opt):
        created = keras.Variable(1.0)
    assert float(created.numpy()) == 1.0


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow internals")
def test_tensorflow_update_reduces_in_a_method_we_can_shadow():
    opt = keras.optimizers.Nadam()
    assert _params(opt._all_reduce_sum_gradients) == ("grads_and_vars",)
    assert opt._distribution_strategy is not None
    internals.leave_all_reduce_to_caller(opt)
    pairs = [(1.0, "v")]
    assert opt._all_reduce_sum_gradients(pairs) is pairs


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow internals")
def test_tensorflow_optimizers_track_named_dependencies():
    owner, child = keras.optimizers.Adam(), keras.optimizers.SGD()
    assert _params(owner._track_trackable)[:3] == ("trackable", "name", "overwrite")
    internals.track_for_checkpoints(owner, child, "rule_optimizer_1")
    assert owner._lookup_dependency("rule_optimizer_1") is child
    # Keras' `.keras` saving walks attributes and skips the base
    # optimizer's, where TensorFlow keeps these dependencies.
    from keras.src.saving import saving_lib

    skipped = saving_lib.get_attr_skipset("Optimizer")
    assert "_self_unconditional_checkpoint_dependencies" in skipped


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow internals")
def test_tensorflow_dependencies_can_be_untracked():
    owner, child, other = keras.optimizers.Adam(), keras.optimizers.SGD(), keras.optimizers.SGD()
    internals.track_for_checkpoints(owner, child, "unfrozen_optimizer_1")
    internals.track_for_checkpoints(owner, other, "unfrozen_optimizer_2")
    internals.untrack_for_checkpoints(owner, "unfrozen_optimizer_1")
    internals.untrack_for_checkpoints(owner, "never_tracked")
    assert owner._lookup_dependency("unfrozen_optimizer_1") is None
    assert owner._lookup_dependency("unfrozen_optimizer_2") is other
    children = owner._trackable_children()
    assert "unfrozen_optimizer_1" not in children and children["unfrozen_optimizer_2"] is other
