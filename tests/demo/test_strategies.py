"""The table of strategies: what each one does to the blocks."""

import keras
import numpy as np
import pytest

import layerwise as lw
from layerwise.demo import model
from layerwise.demo import strategies

BY_NAME = {s.name: s for s in strategies.STRATEGIES}


def _net():
    return model.FineTuningModel(model.initial_weights())


@pytest.fixture
def net():
    return _net()


def _optimizer(name, net):
    rules = BY_NAME[name].rules(net.model, net.blocks)
    optimizer = lw.LayerwiseOptimizer(keras.optimizers.Adam(1e-2), rules)
    optimizer.build(net.model.trainable_variables)
    return optimizer


def _trainable_blocks(optimizer):
    return {p.path.split("/")[-2] for p in optimizer.plan.trainable}


def test_the_table_has_every_entry_the_experiment_compares():
    names = [s.name for s in strategies.STRATEGIES]
    assert len(set(names)) == len(names)
    assert names[0] == "full fine-tuning" and strategies.STRATEGIES[0] is strategies.BASELINE
    assert [s.block for s in strategies.STRATEGIES if s.block] == list(model.BLOCKS)
    for name in ("layer_decay", "discriminative", "gradual unfreezing", "Auto-RGN",
                 "trust ratio"):
        assert name in BY_NAME


def test_blocks_are_the_ones_layer_decay_detects(net):
    detected = lw.detect_blocks(net.model)
    assert [[layer.name for layer in block] for block in detected] == [
        [name] for name in model.BLOCKS]


@pytest.mark.parametrize("block", model.BLOCKS)
def test_surgical_trains_its_block_alone(net, block):
    optimizer = _optimizer(f"only {block}", net)
    assert _trainable_blocks(optimizer) == {block}
    # Only that block's variables hold Adam slots.
    slots = [v.name for v in optimizer.variables if v.name.endswith("_momentum")]
    owners = (f"body_{block}_", f"{block}_")
    assert len(slots) == 2 and all(name.startswith(owners) for name in slots), slots


def test_full_fine_tuning_trains_every_block(net):
    assert _trainable_blocks(_optimizer("full fine-tuning", net)) == set(model.BLOCKS)


def test_layer_wise_multipliers(net):
    rules = BY_NAME["layer_decay"].rules(net.model, net.blocks)
    assert [r.lr_scale for r in rules] == pytest.approx([0.125, 0.25, 0.5, 1.0])
    rules = BY_NAME["discriminative"].rules(net.model, net.blocks)
    assert [r.lr_scale for r in rules] == pytest.approx(
        [0.01, 0.01 ** (2 / 3), 0.01 ** (1 / 3), 1.0])


def test_gradual_unfreezing_starts_with_the_head_alone(net):
    assert _trainable_blocks(_optimizer("gradual unfreezing", net)) == {"head"}


def test_unfreezing_schedule_goes_down_one_block_per_stage():
    names = ["conv1", "conv2", "dense", "head"]
    assert strategies.unfreezing_schedule(names, 8) == {
        0: ["head"], 2: ["dense"], 4: ["conv2"], 6: ["conv1"]}
    assert strategies.unfreezing_schedule(names, 2) == {
        0: ["head", "dense"], 1: ["conv2", "conv1"]}


def _step(name, net, seed):
    """One step of the strategy's optimizer with random gradients: the
    gradients, the weights before and the change, for every weight (a
    frozen one gets a gradient that is not applied)."""
    optimizer = _optimizer(name, net)
    rng = np.random.default_rng(seed)
    weights = net.model.weights
    grads = [rng.normal(0, 1, tuple(v.shape)).astype("float32") for v in weights]
    before = [np.array(v) for v in weights]
    trainable = net.model.trainable_variables
    ids = {id(v) for v in trainable}
    optimizer.apply([g for g, v in zip(grads, weights) if id(v) in ids], trainable)
    return grads, before, [np.array(v) - b for v, b in zip(weights, before)]


def test_auto_rgn_scales_each_kernel_by_its_relative_gradient_norm(net):
    """One step equals Adam's first step times ||g|| / ||w|| over the
    largest of the kernels; biases stay."""
    grads, weights, changes = _step("Auto-RGN", net, seed=0)
    kernels = [i for i, w in enumerate(weights) if w.ndim > 1]
    assert len(kernels) == 4
    ratios = {i: np.linalg.norm(grads[i]) / np.linalg.norm(weights[i]) for i in kernels}
    top = max(ratios.values())
    for i, (g, change) in enumerate(zip(grads, changes)):
        if i not in kernels:
            np.testing.assert_array_equal(change, 0.0)
            continue
        # Keras' Adam, first step: lr * g / (|g| + epsilon / sqrt(1 - beta_2)).
        adam = -1e-2 * g / (np.abs(g) + 1e-7 / np.sqrt(1 - 0.999))
        np.testing.assert_allclose(change, adam * ratios[i] / top, rtol=1e-3, atol=1e-8)


def test_trust_ratio_rescales_each_update_to_the_weights_norm(net):
    _, weights, changes = _step("trust ratio", net, seed=1)
    assert len(weights) == 8
    for w, change in zip(weights, changes):
        if not np.any(w):
            # Zero biases: a ratio of 1, Adam's plain step.
            assert np.linalg.norm(change) == pytest.approx(1e-2 * np.sqrt(w.size), rel=1e-3)
            continue
        assert np.linalg.norm(change) == pytest.approx(1e-2 * np.linalg.norm(w), rel=1e-3)
