"""What Auto-RGN sees, read from the diagnostics, equals the ratios
computed by hand from the gradients."""

import keras
import numpy as np
import pytest

from layerwise.demo import data
from layerwise.demo import model
from layerwise.demo import rgn_view


@pytest.fixture(scope="module")
def setting():
    return model.initial_weights(), data.load_digits()


def _by_hand(pretrained, task, per_class, seed):
    """The gradient as the change of one step of SGD at rate 1 on the same
    batch, then `||g|| / ||w||` per kernel over the largest."""
    net = model.FineTuningModel(pretrained)
    net.model.compile(keras.optimizers.SGD(1.0), model.LOSS)
    before = {b.name: np.array(keras.ops.convert_to_numpy(b.kernel)) for b in net.blocks}
    labelled = data.labelled_subset(task.pool, per_class, seed)
    net.model.train_on_batch(labelled.x, labelled.y)
    ratios = {
        b.name: np.linalg.norm(before[b.name] - keras.ops.convert_to_numpy(b.kernel))
        / np.linalg.norm(before[b.name])
        for b in net.blocks
    }
    top = max(ratios.values())
    return {name: ratio / top for name, ratio in ratios.items()}


def test_ratios_equal_the_gradients_by_hand_and_leave_the_weights(setting):
    pretrained, digits = setting
    measure = rgn_view.RelativeGradientNorms(pretrained)
    for task in (digits.shifts["feature"][0], digits.shifts["output"][0]):
        got = measure(task, 5, seed=0)
        assert list(got) == list(model.BLOCKS)
        assert max(got.values()) == pytest.approx(1.0)
        expected = _by_hand(pretrained, task, 5, seed=0)
        for name in model.BLOCKS:
            assert got[name] == pytest.approx(expected[name], rel=1e-4), name
    for weights, wanted in zip(measure.net.model.get_weights(),
                               pretrained.body + pretrained.head):
        np.testing.assert_array_equal(weights, wanted)
