"""The README's main command runs end to end on a tiny budget."""

import os

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
