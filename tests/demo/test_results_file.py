"""The measurements survive a JSON file unchanged, and the README's table
is the report of the full run's file."""

import json
import os

import pytest

from layerwise.demo import cli
from layerwise.demo import experiment
from layerwise.demo import report
from layerwise.demo import results_file

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FULL_RUN = os.path.join(REPO, "tests", "fixtures", "demo_results.json")


def test_a_saved_run_reads_back_to_the_same_report(tmp_path):
    results = experiment.run_experiment(experiment.QUICK, shifts=("output",), verbose=False)
    path = tmp_path / "results.json"
    results_file.save(results, path)
    again = results_file.load(path)
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


def _readme_report():
    with open(os.path.join(REPO, "README.md")) as f:
        text = f.read()
    section = text[text.index("## The demo"):text.index("## Performance")]
    block = section.split("```\n")[2]  # the fence after "Output of that command"
    return block[:block.index("\n\nFigure written to")]


def test_the_readme_table_is_the_report_of_the_full_run():
    results = results_file.load(FULL_RUN)
    assert results.protocol == experiment.DEFAULT
    assert len(results.cells) == 10 * 3
    assert _readme_report() == report.report(results)


def test_load_results_prints_the_report_and_draws_without_running(tmp_path, capsys):
    output = tmp_path / "figure.png"
    results = cli.run(cli.parse_args(["--load-results", FULL_RUN, "--output", str(output)]))
    printed = capsys.readouterr().out
    assert printed.startswith(f"Results read from {FULL_RUN}, measured on tensorflow.")
    assert report.report(results) in printed
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
