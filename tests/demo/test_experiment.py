"""The demo end to end, on its `--quick` budget, in this process."""

import math
import types

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
    for table in text.split("\n\n")[1:4]:  # after "When to use which"
        for strategy in strategies.STRATEGIES:
            assert f"\n{strategy.name} " in table
    assert "Against one rate" in text
    assert "nan" not in text


def test_the_figure_goes_to_the_cache_by_default(quick):
    _, output = quick
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_says_when_to_use_which_first(quick):
    results, _ = quick
    text = report.report(results)
    assert text.startswith("When to use which, from the tables below")
    first = text.split("\n\n")[0]
    assert "If you can tune the rate: " in first and "If the rate must be high" in first
    assert first.count("one rate on the target") == 2


def test_high_table_does_not_repeat_the_tuned_runs(quick):
    """A strategy tuned at the highest rate has one set of runs: the high
    table points to them instead of printing the same row again."""
    results, _ = quick
    high = report.regime_table(results, "high").splitlines()
    for result in results.strategies:
        row = next(line for line in high if line.startswith(result.strategy.name + " "))
        same = result.tuned_rate == max(experiment.QUICK.grid)
        assert ("the tuned runs above" in row) == same
        assert ("±" in row) != same


def _runs(values):
    return [types.SimpleNamespace(test_accuracy=v) for v in values]


@pytest.mark.parametrize(
    "values, outcome",
    [
        # Difference 0.1; sample std 0.115 each, standard error of the
        # difference sqrt(2 * 0.115**2 / 4) = 0.082: within 2 of them.
        ([0.6, 0.8, 0.6, 0.8], "within noise"),
        # The same difference with a spread 10 times smaller: beyond.
        ([0.69, 0.71, 0.69, 0.71], "better"),
    ],
)
def test_verdict_rule_is_two_standard_errors(values, outcome):
    baseline = _runs([0.5, 0.7, 0.5, 0.7] if outcome == "within noise" else [0.59, 0.61, 0.59, 0.61])
    got, difference = report.compare(_runs(values), baseline, "test_accuracy")
    assert got == outcome
    assert difference == pytest.approx(0.1)


def test_time_since_process_start_includes_start_up():
    since_start = cli.seconds_since_process_start()
    if since_start is None:
        pytest.skip("no /proc on this system")
    # This test process imported Keras and ran the quick demo before.
    assert since_start > 1.0
