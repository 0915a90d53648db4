"""`scripts/summarize_junit.py`: the counts `scripts/test.sh` ends with."""

import importlib.util
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

SCRIPTS = pathlib.Path(__file__).resolve().parent.parent / "scripts"
_spec = importlib.util.spec_from_file_location(
    "summarize_junit", SCRIPTS / "summarize_junit.py"
)
summarize_junit = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(summarize_junit)

# One test per outcome pytest reports, and the combinations that make it
# count a test twice (failed or passed, then an error in teardown).
_OUTCOMES_MODULE = textwrap.dedent('''
    import pytest

    @pytest.fixture
    def broken_setup():
        raise RuntimeError("setup")

    @pytest.fixture
    def broken_teardown():
        yield
        raise RuntimeError("teardown")

    def test_passes(): pass
    def test_passes_again(): pass
    def test_fails(): assert False
    def test_skips(): pytest.skip("why")
    @pytest.mark.skipif(True, reason="why")
    def test_skipped_by_marker(): pass
    @pytest.mark.xfail(reason="known")
    def test_xfails(): assert False
    @pytest.mark.xfail(reason="known", strict=True)
    def test_xpasses_strictly(): pass
    def test_errors_in_setup(broken_setup): pass
    def test_passes_then_errors(broken_teardown): pass
    def test_fails_then_errors(broken_teardown): assert False
''')


def _pytest_report(tmp_path, files):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # not this repository's settings
    report = tmp_path / "report.xml"
    # Plugins (hypothesis, ...) would only slow the run down.
    env = dict(os.environ, PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
         f"--junitxml={report}", str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    return report, result.stdout.strip().splitlines()[-1]


def test_counts_equal_pytest_own_summary(tmp_path):
    report, summary_line = _pytest_report(tmp_path, {"test_outcomes.py": _OUTCOMES_MODULE})
    counts = summarize_junit.count(report)
    assert counts == {"passed": 3, "skipped": 2, "failed": 3, "errors": 3, "xfailed": 1}
    # The same numbers as pytest's last line, e.g.
    # "3 failed, 3 passed, 2 skipped, 1 xfailed, 3 errors in 0.05s".
    for name, key in [("passed", "passed"), ("skipped", "skipped"), ("failed", "failed"),
                      ("xfailed", "xfailed"), ("errors", "error")]:
        assert f"{counts[name]} {key}" in summary_line, (name, summary_line)


def test_a_module_that_fails_to_collect_is_an_error(tmp_path):
    report, _ = _pytest_report(tmp_path, {"test_ok.py": "def test_ok(): pass\n",
                                          "test_broken.py": "import not_a_module\n"})
    assert summarize_junit.count(report) == {
        "passed": 0, "skipped": 0, "failed": 0, "errors": 1, "xfailed": 0}


def test_describe_names_every_outcome_in_order():
    counts = {"passed": 5, "skipped": 1, "failed": 0, "errors": 2, "xfailed": 3}
    assert summarize_junit.describe(counts) == (
        "5 passed, 1 skipped, 0 failed, 2 errors, 3 xfailed")


@pytest.mark.parametrize("content, problem", [
    (None, "cannot read"),
    ("", "cannot read"),
    ("<testsuites><testsuite name='pytest'", "cannot read"),
    ("<html></html>", "not a JUnit report"),
    ("<testsuites><testsuite name='pytest' tests='0'/></testsuites>", "holds no test case"),
])
def test_a_report_without_results_is_refused(tmp_path, content, problem):
    path = tmp_path / "report.xml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(summarize_junit.ReportError, match=problem):
        summarize_junit.count(path)


def test_the_command_line_prints_the_counts_or_fails(tmp_path):
    path = tmp_path / "report.xml"
    path.write_text(
        "<testsuites><testsuite><testcase name='a'/>"
        "<testcase name='b'><skipped type='pytest.skip' message='why'/></testcase>"
        "</testsuite></testsuites>"
    )
    script = str(SCRIPTS / "summarize_junit.py")
    ok = subprocess.run([sys.executable, script, str(path)], capture_output=True, text=True)
    assert (ok.returncode, ok.stdout) == (
        0, "1 passed, 1 skipped, 0 failed, 0 errors, 0 xfailed\n")
    missing = subprocess.run([sys.executable, script, str(tmp_path / "none.xml")],
                             capture_output=True, text=True)
    assert missing.returncode == 1 and missing.stdout.startswith("no results (cannot read")


def test_the_total_is_a_plain_closing_line_over_every_readable_report(tmp_path):
    one, two = tmp_path / "one.xml", tmp_path / "two.xml"
    one.write_text(
        "<testsuites><testsuite><testcase name='a'/><testcase name='b'/>"
        "<testcase name='c'><error message='failed on setup with x'/></testcase>"
        "</testsuite></testsuites>"
    )
    two.write_text(
        "<testsuites><testsuite><testcase name='a'><failure message='x'/></testcase>"
        "<testcase name='b'><skipped type='pytest.xfail' message='known'/></testcase>"
        "<testcase name='c'><skipped type='pytest.skip' message='why'/></testcase>"
        "</testsuite></testsuites>"
    )
    script = str(SCRIPTS / "summarize_junit.py")
    total = subprocess.run([sys.executable, script, "--total", str(one), str(two)],
                           capture_output=True, text=True)
    # Errors count as failed, xfailed as skipped.
    assert (total.returncode, total.stdout) == (0, "total: 2 passed, 2 failed, 2 skipped\n")
    partial = subprocess.run(
        [sys.executable, script, "--total", str(one), str(tmp_path / "none.xml")],
        capture_output=True, text=True)
    assert partial.returncode == 1
    assert partial.stdout.splitlines()[-1] == "total: 2 passed, 1 failed, 0 skipped"
