"""Counts the outcomes in pytest JUnit XML reports (`--junitxml`).

    python scripts/summarize_junit.py REPORT.xml
    -> 812 passed, 14 skipped, 0 failed, 0 errors, 2 xfailed
    python scripts/summarize_junit.py --total A.xml B.xml C.xml
    -> total: 2436 passed, 0 failed, 44 skipped

The total is the plain closing line that tools reading a test run's output
understand: its "failed" adds the errors and its "skipped" the xfailed.

Reads the structured report, one `<testcase>` at a time, instead of
pytest's last line of text (which `-q -q` hides). Exits 1, printing why,
when a report is missing, unreadable or holds no test case, so a run that
produced no results cannot pass as an empty success.

Each test counts once by what its `<testcase>` elements hold (pytest 8-9's
format; a test that fails, then errors in teardown, has two):
`<failure>` failed (a strict xfail that passed included; older pytest wrote
it as a `<skipped>` saying "passes unexpectedly", also failed); a
`<skipped>` of type `pytest.xfail` xfailed, any other skipped; none of these, passed (a non-strict xpass included: the report
does not tell it apart). Each `<error>` counts as an error on its own, as
pytest counts it: a test that passes (or fails) and then errors in teardown
is one passed (or failed) and one error; one that errors in setup, or a
module that fails to collect, is an error only.
"""

import sys
import xml.etree.ElementTree as ET

OUTCOMES = ("passed", "skipped", "failed", "errors", "xfailed")


class ReportError(Exception):
    """The report cannot be read as pytest's JUnit XML."""


def count(path):
    """The outcome counts of the report at `path`, keyed by `OUTCOMES`."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as error:
        raise ReportError(f"cannot read {path}: {error}") from error
    if root.tag not in ("testsuites", "testsuite"):
        raise ReportError(f"{path} is not a JUnit report: its root is <{root.tag}>")
    # A test that fails and then errors in teardown has two elements under
    # one name: its outcome comes from both.
    tests = {}
    for case in root.iter("testcase"):
        key = (case.get("classname"), case.get("name"))
        tests.setdefault(key, []).extend(case)
    if not tests:
        raise ReportError(f"{path} holds no test case")
    counts = dict.fromkeys(OUTCOMES, 0)
    for children in tests.values():
        errors = [child for child in children if child.tag == "error"]
        counts["errors"] += len(errors)
        outcome = _outcome(children)
        if outcome:
            counts[outcome] += 1
        elif all(e.get("message", "").startswith("failed on teardown") for e in errors):
            counts["passed"] += 1  # an error in teardown comes after the test passed
    return counts


def _outcome(children):
    tags = {child.tag: child for child in children}
    if "failure" in tags:
        return "failed"
    skipped = tags.get("skipped")
    if skipped is None:
        return None
    if skipped.get("type") == "pytest.xfail":
        return "xfailed"
    if "passes unexpectedly" in skipped.get("message", ""):
        return "failed"
    return "skipped"


def describe(counts):
    return ", ".join(f"{counts[name]} {name}" for name in OUTCOMES)


def describe_total(all_counts):
    total = {name: sum(counts[name] for counts in all_counts) for name in OUTCOMES}
    return (f"total: {total['passed']} passed, {total['failed'] + total['errors']} failed, "
            f"{total['skipped'] + total['xfailed']} skipped")


def main(argv):
    paths = argv[2:] if argv[1:2] == ["--total"] else argv[1:]
    if not paths or (argv[1] != "--total" and len(paths) != 1):
        print(f"usage: {argv[0]} REPORT.xml | --total REPORT.xml...", file=sys.stderr)
        return 2
    all_counts, status = [], 0
    for path in paths:
        try:
            all_counts.append(count(path))
        except ReportError as error:
            print(f"no results ({error})")
            status = 1
    if argv[1] == "--total":
        print(describe_total(all_counts))
    elif all_counts:
        print(describe(all_counts[0]))
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv))
