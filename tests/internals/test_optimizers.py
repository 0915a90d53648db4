"""Fails loudly if Keras moves an internal that `layerwise` relies on.

Every private name `layerwise/_internals/optimizers.py` touches is checked here;
if one of these fails after a Keras upgrade, adapt that module (and only
that module).
"""

import keras
import pytest

from layerwise._internals import optimizers as internals


@pytest.mark.parametrize(
    "method",
    [
        "_backend_update_step",
        "_clip_gradients",
        "_use_weight_decay",
        "_get_current_learning_rate",
        "_untrack_variable",
        "_overwrite_variables_directly_with_gradients",
        "_check_variables_are_known",
        "_var_key",
    ],
)
def test_optimizer_private_methods_exist(method):
    assert callable(getattr(keras.optimizers.Adam(), method, None)), (
        f"keras.optimizers.Optimizer.{method} moved; update "
        "layerwise/_internals/optimizers.py"
    )


def test_optimizer_keeps_iterations_and_tracker():
    opt = keras.optimizers.SGD(0.1)
    assert isinstance(opt._iterations, keras.Variable)
    assert isinstance(opt._learning_rate, keras.Variable)
    assert callable(opt._tracker.add_to_store)


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
    assert callable(opt._all_reduce_sum_gradients)
    assert opt._distribution_strategy is not None
    internals.leave_all_reduce_to_caller(opt)
    pairs = [(1.0, "v")]
    assert opt._all_reduce_sum_gradients(pairs) is pairs
