"""The demo end to end, on its `--quick` budget, in this process; the
report's rule and sentences on made-up results."""

import math
import types

import numpy as np
import pytest

from layerwise.demo import cli
from layerwise.demo import data
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


def test_every_strategy_runs_on_every_task_of_every_shift(quick):
    results, _ = quick
    protocol = experiment.QUICK
    assert results.shifts == data.SHIFTS
    assert [s.name for s in results.strategies] == [s.name for s in strategies.STRATEGIES]
    tasks = {"input": list(data.CORRUPTIONS), "feature": ["digits 5-9"],
             "output": ["labels remapped"]}
    for strategy in results.strategies:
        for shift in data.SHIFTS:
            cell = results.cell(strategy, shift)
            assert [t.task for t in cell.tasks] == tasks[shift]
            for task in cell.tasks:
                assert set(task.tuning) == set(protocol.grid)
                assert task.tuned_rate in protocol.grid
                for rate, runs in task.tuning.items():
                    assert [r.seed for r in runs] == list(protocol.tuning_seeds)
                    assert {r.learning_rate for r in runs} == {rate}
                assert not set(protocol.tuning_seeds) & set(protocol.seeds)
                assert [r.seed for r in task.runs] == list(protocol.seeds)
                assert {r.learning_rate for r in task.runs} == {task.tuned_rate}
                for run in task.runs:
                    assert 0.0 <= run.val_accuracy <= 1.0 and 0.0 <= run.test_accuracy <= 1.0
            accuracies = cell.accuracies()
            assert accuracies.shape == (len(protocol.seeds),)
            expected = np.mean([[r.test_accuracy for r in t.runs] for t in cell.tasks], axis=0)
            np.testing.assert_allclose(accuracies, expected)


def test_the_rate_chosen_is_the_best_on_validation_ties_to_the_lower(quick):
    results, _ = quick
    for cell in results.cells.values():
        for task in cell.tasks:
            scores = {rate: np.mean([r.val_accuracy for r in runs])
                      for rate, runs in task.tuning.items()}
            best = max(scores.values())
            lowest = min(rate for rate, score in scores.items() if score == best)
            assert task.tuned_rate == lowest


def test_no_fine_tuning_is_the_pretrained_network(quick):
    results, _ = quick
    # Output-level: the same images, every label changed; the source
    # network is right on (nearly) none of them.
    assert results.zero_shot_mean("output") <= 1.0 - results.source_accuracy + 0.05
    assert list(results.zero_shot["input"]) == list(data.CORRUPTIONS)


def test_report_leads_with_the_table_and_lists_every_cell(quick):
    results, _ = quick
    text = report.report(results)
    assert text.startswith("Target accuracy (test), mean ± standard error over 2 seeds")
    table = text.split("\n\n")[0]
    for shift in data.SHIFTS:
        assert f"{shift}-level" in table.splitlines()[2]
    for strategy in strategies.STRATEGIES:
        row = next(line for line in table.splitlines() if line.startswith(strategy.name + " "))
        assert row.count("±") == 3
    assert "nan" not in text
    findings = text.split("\n\n")[1]
    for label in data.SHIFT_LABELS.values():
        assert label in findings
    assert "The paper's pattern of blocks (first / middle / last)" in findings
    assert "The picked block alone against full fine-tuning: " in findings
    assert "Auto-RGN, with no choice of blocks" in findings


def test_the_figure_goes_to_the_cache_by_default(quick):
    _, output = quick
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_one_shift_runs_alone(tmp_path):
    results = cli.run(cli.parse_args(
        ["--quick", "--shift", "output", "--output", str(tmp_path / "one.png")]))
    assert results.shifts == ("output",)
    assert {shift for _, shift in results.cells} == {"output"}
    assert "output-level" in report.report(results)
    assert (tmp_path / "one.png").exists()


def test_unknown_shift_is_refused_before_anything_runs():
    with pytest.raises(ValueError, match="`shifts` must be names among"):
        experiment.run_experiment(experiment.QUICK, shifts=("weather",), verbose=False)


def _cell(values):
    """A made-up `Cell` whose validation and test accuracies are `values`."""
    run = lambda v: types.SimpleNamespace(test_accuracy=v, val_accuracy=v)  # noqa: E731
    return types.SimpleNamespace(tasks=[types.SimpleNamespace(runs=[run(v) for v in values])],
                                 accuracies=lambda split="test": np.array(values))


def _made_up(best_block, seeds=5):
    """Results where tuning `best_block[shift]` alone gives 0.9 and every
    other strategy 0.8 (with a small spread), on every shift."""
    spread = np.linspace(-0.01, 0.01, seeds)
    cells = {}
    for strategy in strategies.STRATEGIES:
        for shift in data.SHIFTS:
            top = strategy.block == best_block[shift]
            cells[(strategy.name, shift)] = _cell(list((0.9 if top else 0.8) + spread))
    return experiment.Results(
        backend="made up", protocol=experiment.DEFAULT, shifts=data.SHIFTS,
        strategies=strategies.STRATEGIES, source_accuracy=1.0,
        zero_shot={shift: {"task": 0.5} for shift in data.SHIFTS}, cells=cells,
        rgn={shift: {"task": {"conv1": 1.0, "conv2": 0.2, "dense": 0.1, "head": 0.5}}
             for shift in data.SHIFTS})


def test_findings_say_the_pattern_reproduces_when_it_does():
    results = _made_up({"input": "conv1", "feature": "dense", "output": "head"})
    text = report.findings(results)
    assert text.count(": reproduced.") == 3
    assert "only conv1 wins (+0.100 against full fine-tuning)" in text
    assert ("Block picked: conv1 (0.900); the paper's is the first block (conv1): conv1 "
            "against conv2, the best other, +0.100: reproduced.") in text
    assert ("The paper's pattern of blocks (first / middle / last): reproduced on "
            "input-level, feature-level, output-level.") in text
    assert "The picked block alone against full fine-tuning: better on input-level, " \
           "feature-level, output-level." in text
    assert "Auto-RGN, with no choice of blocks, against the picked block: " \
           "input-level -0.100 (worse)" in text
    assert ("Auto-RGN's largest rate before its first step goes to: input-level conv1; "
            "feature-level conv1; output-level conv1 (picked block: conv1; dense; "
            "head).") in text


def test_findings_say_so_plainly_when_it_does_not():
    results = _made_up({"input": "head", "feature": "conv1", "output": "head"})
    text = report.findings(results)
    assert ("Block picked: head (0.900); the paper's is the first block (conv1): conv1 "
            "against head, the best other, -0.100: NOT reproduced.") in text
    assert ("The paper's pattern of blocks (first / middle / last): NOT reproduced on "
            "input-level, feature-level; reproduced on output-level.") in text


@pytest.mark.parametrize("paper_first", [True, False])
def test_findings_say_when_the_papers_block_is_within_noise_of_another(paper_first):
    """Within noise is a tie whichever of the two has the higher mean."""
    results = _made_up({"input": "conv2", "feature": "dense", "output": "head"})
    # 0.005 apart with a spread of +-0.03: within noise.
    spread = np.linspace(-0.03, 0.03, 5)
    conv1, conv2 = (0.9, 0.895) if paper_first else (0.895, 0.9)
    results.cells[("only conv1", "input")] = _cell(list(conv1 + spread))
    results.cells[("only conv2", "input")] = _cell(list(conv2 + spread))
    text = report.findings(results)
    top = "conv1" if paper_first else "conv2"
    sign = "+" if paper_first else "-"
    assert (f"Block picked: {top} (0.900); the paper's is the first block (conv1): conv1 "
            f"against conv2, the best other, {sign}0.005: not distinguished from another "
            "block (within noise).") in text


def test_the_block_is_picked_on_validation_not_on_test():
    results = _made_up({"input": "conv1", "feature": "dense", "output": "head"})
    # conv2 is best on test but worst on validation: conv1 stays picked.
    spread = np.linspace(-0.01, 0.01, 5)
    cell = _cell(list(0.95 + spread))
    cell.accuracies = lambda split="test": (0.95 if split == "test" else 0.5) + spread
    results.cells[("only conv2", "input")] = cell
    assert report.picked(results, "input", report.surgical(results)).block == "conv1"
    assert report.best(results, "input").block == "conv2"


def test_table_marks_better_worse_and_best():
    results = _made_up({"input": "conv1", "feature": "dense", "output": "head"})
    lines = report.table(results).splitlines()
    conv1 = next(line for line in lines if line.startswith("only conv1 "))
    assert "0.900 ± 0.004+*" in conv1
    full = next(line for line in lines if line.startswith("full fine-tuning "))
    assert "+" not in full and "*" not in full


@pytest.mark.parametrize(
    "values, outcome",
    [
        # Difference 0.1; standard errors 0.0577 each, of the difference
        # 0.0816: within 2 of them.
        ([0.6, 0.8, 0.6, 0.8], "within noise"),
        # The same difference with a spread 10 times smaller: beyond.
        ([0.69, 0.71, 0.69, 0.71], "better"),
    ],
)
def test_verdict_rule_is_two_standard_errors(values, outcome):
    baseline = [0.5, 0.7, 0.5, 0.7] if outcome == "within noise" else [0.59, 0.61, 0.59, 0.61]
    got, difference = report.compare(values, baseline)
    assert got == outcome
    assert difference == pytest.approx(0.1)
    assert report.compare(baseline, values)[0] == (
        "worse" if outcome == "better" else "within noise")


def test_summarize_gives_the_standard_error_of_the_mean():
    mean, error, n = experiment.summarize([1.0, 2.0, 3.0, 4.0])
    assert (mean, n) == (2.5, 4)
    assert error == pytest.approx(np.std([1, 2, 3, 4], ddof=1) / 2)
    assert experiment.summarize([0.5]) == (0.5, 0.0, 1)


def test_time_since_process_start_includes_start_up():
    since_start = cli.seconds_since_process_start()
    if since_start is None:
        pytest.skip("no /proc on this system")
    # This test process imported Keras and ran the quick demo before.
    assert since_start > 1.0
    assert math.isfinite(since_start)
