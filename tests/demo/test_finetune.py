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
    rng = np.random.default_rng(0)
    body = [w for layer in model.make_body().layers for w in model.fresh_weights(layer, rng)]
    head = model.fresh_weights(model.make_head("source_head"), rng)
    return model.Pretrained(body, head), data.load_digits()


def _weights(tuner):
    return [np.array(w) for w in tuner.net.model.get_weights()]


def test_a_reused_model_runs_like_a_fresh_one(setting):
    # layer_decay: the optimizer's state includes its rules' multipliers.
    strategy = BY_NAME["layer_decay"]
    reused = finetune.FineTuner(strategy, *setting, BUDGET)
    reused.run(3e-2, seed=1)
    compiled = reused.net
    second = reused.run(1e-2, seed=0)
    assert reused.net is compiled
    fresh = finetune.FineTuner(strategy, *setting, BUDGET)
    expected = fresh.run(1e-2, seed=0)
    for actual, wanted in zip(_weights(reused), _weights(fresh)):
        np.testing.assert_allclose(actual, wanted, rtol=1e-5, atol=1e-6)
    assert second.val_curve == pytest.approx(expected.val_curve)
    assert second.state_size == expected.state_size


def test_a_run_that_adds_optimizer_state_compiles_the_next_one_afresh(setting):
    # One epoch: every block unfreezes at epoch 0, each getting new slots.
    tuner = finetune.FineTuner(BY_NAME["gradual unfreezing"], *setting, BUDGET)
    tuner.run(1e-2, seed=0)
    compiled = tuner.net
    tuner.run(1e-2, seed=0)
    assert tuner.net is not compiled
