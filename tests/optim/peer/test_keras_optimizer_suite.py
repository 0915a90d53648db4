"""Keras' own optimizer tests, run against `LayerwiseOptimizer`.

For each Keras test file and each variant (see `harness.VARIANTS`), the
file's `TestCase` classes are loaded with every optimizer class wrapped and
collected here as `<file>.<Class>[<variant>]`, e.g.
`adam_test.AdamTest[catch_all]::test_weight_decay`. Tests listed in
`expectations.KNOWN` (not meaningful for a wrapper) are strict xfails; tests
in `expectations.ENGINE_BUGS` are non-strict xfails until the engine is
fixed; tests in `expectations.SLOW` are skipped where listed unless
`LAYERWISE_PEER_FULL=1`. Tests Keras skips on a backend stay skipped.
"""

from tests.optim.peer import expectations
from tests.optim.peer import harness
from tests.optim.peer import marks
from tests.optim.peer import test_counterparts

COUNTERPARTS = [n for n in dir(test_counterparts) if n.startswith("test_")]


def _collect():
    """Loads every (file, variant) and exposes its test classes here."""
    collected = {}
    for variant in harness.VARIANTS:
        for path in harness.keras_test_files():
            module = harness.load(path, variant)
            for class_name, cls in harness.case_classes(module).items():
                class_id = f"{path.stem}.{class_name}"
                for method_name in harness.case_method_names(cls):
                    marks.mark(cls, method_name, f"{class_id}.{method_name}", variant)
                collected[f"{class_id}[{variant.id}]"] = cls
    return collected


COLLECTED = _collect()
globals().update(COLLECTED)


def test_expectations_name_collected_tests():
    """Every id in the expectations names a test that exists."""
    ids = {
        f"{name.split('[')[0]}.{method}"
        for name, cls in COLLECTED.items()
        for method in harness.case_method_names(cls)
    }
    ids |= {f"counterparts.{name}" for name in COUNTERPARTS}
    stems = {path.stem for path in harness.keras_test_files()} | {"counterparts"}
    listed = set(expectations.KNOWN) | set(expectations.ENGINE_BUGS)
    listed |= set(expectations.MASKED) | set(expectations.MASKED.values())
    # The training suite checks its own ids (`test_keras_training_suite.py`).
    listed = {i for i in listed if i.split(".")[0] in stems}
    stale = sorted(listed - ids) + [
        prefix
        for prefix in expectations.SLOW
        if prefix.split(".")[0] in stems
        and not any(test_id.startswith(prefix) for test_id in ids)
    ]
    assert not stale, f"Expectations name no collected test: {stale}"
