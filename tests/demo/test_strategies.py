"""The table of strategies: what each one does to the blocks."""

import keras
import numpy as np
import pytest

import layerwise as lw
from layerwise.demo import model
from layerwise.demo import strategies


def _net():
    weights = [np.zeros(tuple(w.shape), "float32") for w in model.make_body().weights]
    pretrained = model.Pretrained(weights, [np.zeros((64, 5)), np.zeros(5)])
    return model.FineTuningModel(pretrained)


@pytest.fixture
def net():
    return _net()


def _rules(name, net):
    strategy = {s.name: s for s in strategies.STRATEGIES}[name]
    return strategy.rules(net.model, net.blocks)


def test_blocks_are_the_ones_layer_decay_detects(net):
    detected = lw.detect_blocks(net.model)
    assert [[layer.name for layer in block] for block in detected] == [
        ["conv1"], ["conv2"], ["dense"], ["head"]]


def test_layer_wise_multipliers(net):
    assert [r.lr_scale for r in _rules("layer_decay", net)] == pytest.approx(
        [0.125, 0.25, 0.5, 1.0])
    assert [r.lr_scale for r in _rules("discriminative", net)] == pytest.approx(
        [0.01, 0.01 ** (2 / 3), 0.01 ** (1 / 3), 1.0])


@pytest.mark.parametrize("name", ["frozen body", "gradual unfreezing"])
def test_frozen_body_and_gradual_unfreezing_start_with_the_head_alone(name):
    net = _net()
    optimizer = lw.LayerwiseOptimizer(keras.optimizers.Adam(), _rules(name, net))
    optimizer.build(net.model.trainable_variables)
    trainable = [p.path for p in optimizer.plan.trainable]
    assert trainable and all("head" in path for path in trainable), trainable


def test_unfreezing_schedule_goes_down_one_block_per_stage():
    names = ["conv1", "conv2", "dense", "head"]
    assert strategies.unfreezing_schedule(names, 8) == {
        0: ["head"], 2: ["dense"], 4: ["conv2"], 6: ["conv1"]}
    assert strategies.unfreezing_schedule(names, 2) == {
        0: ["head", "dense"], 1: ["conv2", "conv1"]}


def test_names_are_unique():
    names = [s.name for s in strategies.STRATEGIES]
    assert len(set(names)) == len(names) and names[0] == "one rate"
