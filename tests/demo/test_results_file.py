"""The measurements survive a JSON file unchanged; the README's report is
that of the full run's file, its prose quotes that report, and the three
backends' full runs agree."""

import json
import os
import re

import numpy as np
import pytest

from layerwise.demo import cli
from layerwise.demo import experiment
from layerwise.demo import report
from layerwise.demo import results_file

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FULL_RUNS = {
    backend: os.path.join(REPO, "tests", "fixtures", f"demo_results_{backend}.json")
    for backend in ("tensorflow", "jax", "torch")
}
NUMBER = re.compile(r"\d\.\d{3}")


def test_a_saved_run_reads_back_to_the_same_report(tmp_path):
    results = experiment.run_experiment(experiment.QUICK, shifts=("output",), verbose=False)
    path = tmp_path / "results.json"
    results_file.save(results, path)
    again = results_file.load(path)
    assert again.protocol == results.protocol
    assert report.report(again) == report.report(results)
    assert again.cells.keys() == results.cells.keys()
    for key, cell in results.cells.items():
        for task, other in zip(cell.tasks, again.cells[key].tasks):
            assert other.runs == task.runs and other.tuning == task.tuning


def test_a_file_of_another_format_is_refused(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"format": 99}))
    with pytest.raises(ValueError, match="must have format 1. Received: format=99"):
        results_file.load(path)


def _readme_demo_section():
    with open(os.path.join(REPO, "README.md")) as f:
        text = f.read()
    section = text[text.index("\n## The demo\n"):]
    return section[:section.index("\n## ", 1)]


def _readme_report_and_prose():
    """The report in the section's output block, and the prose after it."""
    section = _readme_demo_section()
    start = section.index("```\nTarget accuracy") + len("```\n")
    end = section.index("\n\nFigure written to", start)
    after = section[section.index("\n```\n", end) + len("\n```\n"):]
    return section[start:end], after


@pytest.fixture(scope="module")
def full_runs():
    return {backend: results_file.load(path) for backend, path in FULL_RUNS.items()}


def test_the_readme_report_is_that_of_the_tensorflow_full_run(full_runs):
    results = full_runs["tensorflow"]
    assert results.backend == "tensorflow"
    assert results.protocol == experiment.DEFAULT
    assert len(results.cells) == 10 * 3
    printed, _ = _readme_report_and_prose()
    assert printed == report.report(results)


def test_every_number_of_the_readme_prose_is_in_a_report_or_a_difference_of_two(full_runs):
    quoted = set()
    for results in full_runs.values():
        quoted |= {float(n) for n in NUMBER.findall(report.report(results))}
    values = np.array(sorted(quoted))
    _, prose = _readme_report_and_prose()
    numbers = [float(n) for n in NUMBER.findall(prose)]
    assert len(numbers) > 20
    for number in numbers:
        # Differences of two three-decimal numbers, rounded: within 0.001.
        differences = np.abs(values[:, None] - values[None, :])
        assert number in quoted or np.min(np.abs(differences - number)) <= 0.0011, number


def _marks(results):
    """Each cell's `+`/`-`/`*` marks in the main table, by row."""
    rows = report.table(results).splitlines()[4:]
    return [re.findall(r"± \d\.\d{3}([+\-*]*)", row) for row in rows]


def test_the_three_backends_agree(full_runs):
    tensorflow = full_runs["tensorflow"]
    for backend in ("jax", "torch"):
        other = full_runs[backend]
        assert other.backend == backend and other.protocol == tensorflow.protocol
        assert _marks(other) == _marks(tensorflow)
        # The same verdicts, word for word, whatever the last digits.
        assert NUMBER.sub("#", report.findings(other)) == NUMBER.sub(
            "#", report.findings(tensorflow))
        for key, cell in tensorflow.cells.items():
            assert [t.tuned_rate for t in other.cells[key].tasks] == [
                t.tuned_rate for t in cell.tasks], key
            np.testing.assert_allclose(
                other.cells[key].accuracies(), cell.accuracies(), atol=0.02, err_msg=str(key))


def test_load_results_prints_the_report_and_draws_without_running(tmp_path, capsys):
    output = tmp_path / "figure.png"
    path = FULL_RUNS["tensorflow"]
    results = cli.run(cli.parse_args(["--load-results", path, "--output", str(output)]))
    printed = capsys.readouterr().out
    assert printed.startswith(f"Results read from {path}, measured on tensorflow.")
    assert report.report(results) in printed
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
