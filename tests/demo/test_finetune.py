"""Runs that share a compiled model start exactly where a fresh one does."""

import numpy as np
import pytest

from layerwise.demo import data
from layerwise.demo import finetune
from layerwise.demo import model
from layerwise.demo import strategies

BUDGET = finetune.Budget(labels_per_class=5, epochs=1, steps_per_epoch=3, batch_size=10)
BY_NAME = {s.name: s for s in strategies.STRATEGIES}


@pytest.fixture(scope="module")
def setting():
    # Untrained weights do: only the bookkeeping of the runs is under test.
    return model.initial_weights(), data.load_digits()


def _weights(tuner):
    return [np.array(w) for w in tuner.net.model.get_weights()]


def test_a_reused_model_runs_like_a_fresh_one(setting):
    pretrained, digits = setting
    feature, output = digits.shifts["feature"][0], digits.shifts["output"][0]
    # layer_decay: the optimizer's state includes its rules' multipliers.
    strategy = BY_NAME["layer_decay"]
    reused = finetune.FineTuner(strategy, pretrained, BUDGET)
    reused.run(output, 3e-2, seed=1)
    compiled = reused.net
    second = reused.run(feature, 1e-2, seed=0)
    assert reused.net is compiled
    fresh = finetune.FineTuner(strategy, pretrained, BUDGET)
    expected = fresh.run(feature, 1e-2, seed=0)
    for actual, wanted in zip(_weights(reused), _weights(fresh)):
        np.testing.assert_allclose(actual, wanted, rtol=1e-5, atol=1e-6)
    assert second.test_accuracy == pytest.approx(expected.test_accuracy)
    assert (second.task, second.learning_rate, second.seed) == ("digits 5-9", 1e-2, 0)


def test_a_run_that_adds_optimizer_state_compiles_the_next_one_afresh(setting):
    pretrained, digits = setting
    task = digits.shifts["output"][0]
    # One epoch: every block unfreezes at epoch 0, each getting new slots.
    tuner = finetune.FineTuner(BY_NAME["gradual unfreezing"], pretrained, BUDGET)
    tuner.run(task, 1e-2, seed=0)
    compiled = tuner.net
    tuner.run(task, 1e-2, seed=0)
    assert tuner.net is not compiled


@pytest.mark.parametrize("block", ["conv1", "head"])
def test_a_surgical_run_changes_its_block_alone(setting, block):
    pretrained, digits = setting
    tuner = finetune.FineTuner(BY_NAME[f"only {block}"], pretrained, BUDGET)
    tuner.run(digits.shifts["input"][0], 1e-2, seed=0)
    for layer in tuner.net.blocks:
        before = pretrained.head if layer.name == "head" else [
            w for other, w in zip(tuner.net.body.weights, pretrained.body)
            if other.path.split("/")[-2] == layer.name]
        after = [np.array(w) for w in layer.get_weights()]
        changed = any(not np.array_equal(a, b) for a, b in zip(after, before))
        assert changed == (layer.name == block), layer.name
