"""The README's main command runs end to end on a tiny budget."""

import os

import numpy as np

from layerwise.demo.__main__ import main


def test_demo_runs_and_writes_the_plot(tmp_path, capsys):
    output = os.path.join(tmp_path, "curves.png")
    results = main(["--epochs", "2", "--pretrain-epochs", "1", "--output", output])
    labels = [r[0] for r in results]
    assert labels == ["one learning rate", "frozen body + head", "layer-wise"]
    for _, final, best, seconds in results:
        assert 0.0 <= final <= best <= 1.0 and seconds > 0
    with open(output, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "Results (validation accuracy" in printed
    assert "LR scale" in printed  # the layer-wise strategy prints its plan


def test_layer_wise_strategy_is_layer_decay_over_the_detected_blocks():
    import pytest

    from layerwise.demo.__main__ import _fine_tune_model
    from layerwise.demo.__main__ import _pretrain
    from layerwise.demo.__main__ import _rules
    from layerwise.optim.recipes import layer_decay

    x = np.zeros((4, 8, 8, 1), "float32")
    pretrained, _ = _pretrain((x, np.zeros(4, "int32")), epochs=1, seed=0)
    model = _fine_tune_model(pretrained, seed=0)
    rules = _rules("layer-wise", model, 0.3)
    assert [r.name for r in rules] == ["conv1", "conv2", "dense", "head"]
    assert [r.lr_scale for r in rules] == pytest.approx([0.3**3, 0.3**2, 0.3, 1.0])
    detected = layer_decay(model, decay=0.3)
    assert [r.get_config() for r in detected] == [r.get_config() for r in rules]
