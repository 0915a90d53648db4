"""The demo end to end, on its `--quick` budget, in this process."""

import math

import pytest

from layerwise.demo import cli
from layerwise.demo import experiment
from layerwise.demo import report
from layerwise.demo import strategies


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """The quick demo without `--output`, run from a clone's directory."""
    root = tmp_path_factory.mktemp("demo")
    clone = root / "clone"
    clone.mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(clone)
        patch.setenv("XDG_CACHE_HOME", str(root / "cache"))
        results = cli.run(cli.parse_args(["--quick"]))
    assert not list(clone.iterdir())
    return results, root / "cache" / "layerwise" / "demo.png"


def test_every_strategy_has_finite_results_in_every_regime(quick):
    results, _ = quick
    assert [r.strategy.name for r in results.strategies] == [
        s.name for s in strategies.STRATEGIES]
    for result in results.strategies:
        assert result.tuned_rate in experiment.QUICK.grid
        assert set(result.regimes) == set(experiment.REGIMES)
        for runs in result.regimes.values():
            assert [run.seed for run in runs] == list(experiment.QUICK.seeds)
            for run in runs:
                for value in (run.val_accuracy, run.test_accuracy, run.source_accuracy,
                              *run.val_curve, *run.source_curve):
                    assert 0.0 <= value <= 1.0
                assert len(run.val_curve) == experiment.QUICK.budget.epochs + 1
                assert math.isfinite(run.ms_per_step) and run.ms_per_step > 0
                assert run.state_size > 0


def test_the_high_regime_runs_at_the_highest_rate(quick):
    results, _ = quick
    for result in results.strategies:
        assert {run.learning_rate for run in result.regimes["high"]} == {max(experiment.QUICK.grid)}
        assert {run.learning_rate for run in result.regimes["tuned"]} == {result.tuned_rate}


def test_frozen_body_keeps_the_source_task_and_holds_only_the_heads_slots(quick):
    results, _ = quick
    by_name = {r.strategy.name: r for r in results.strategies}
    frozen = by_name["frozen body"].regimes["tuned"][0]
    one_rate = by_name["one rate"].regimes["tuned"][0]
    assert frozen.source_accuracy == pytest.approx(results.source_before)
    head = 64 * 5 + 5
    assert frozen.state_size == 2 * head + 2  # Adam's m and v, step, rate
    assert one_rate.state_size > 100 * frozen.state_size


def test_report_lists_every_strategy_in_every_table(quick, capsys):
    results, _ = quick
    text = report.report(results)
    for table in text.split("\n\n")[:3]:
        for strategy in strategies.STRATEGIES:
            assert f"\n{strategy.name} " in table
    assert "Against one rate" in text
    assert "nan" not in text


def test_the_figure_goes_to_the_cache_by_default(quick):
    _, output = quick
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
