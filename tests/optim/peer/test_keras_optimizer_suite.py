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

import os

import keras
import pytest

from tests.optim.peer import expectations
from tests.optim.peer import harness
from tests.optim.peer import test_counterparts

COUNTERPARTS = [n for n in dir(test_counterparts) if n.startswith("test_")]

BACKEND = keras.backend.backend()
FULL = os.environ.get("LAYERWISE_PEER_FULL") == "1"


def _marks(test_id, variant):
    marks = []
    slow = expectations.slow_reason(test_id, variant.id, BACKEND)
    if slow is not None and not FULL:
        skip = f"slow (LAYERWISE_PEER_FULL=1 runs it): {slow}"
        marks.append(pytest.mark.skip(reason=skip))
    known = expectations.known_reason(test_id, variant.id, BACKEND)
    if known is not None:
        marks.append(pytest.mark.xfail(strict=True, reason=f"known: {known}"))
    cause = expectations.engine_bug(test_id, variant.id, BACKEND)
    if cause is not None:
        bug = f"engine bug: {cause.summary}"
        marks.append(pytest.mark.xfail(strict=False, reason=bug))
    return marks


def _mark(cls, method_name, test_id, variant):
    """Marks the method on this loaded copy of the class (each variant
    loads its own copy of the file, so marks do not leak across variants)."""
    marks = _marks(test_id, variant)
    if marks:
        method = getattr(cls, method_name)
        for mark in marks:
            method = mark(method)
        setattr(cls, method_name, method)


def _collect():
    """Loads every (file, variant) and exposes its test classes here."""
    collected = {}
    for variant in harness.VARIANTS:
        for path in harness.keras_test_files():
            module = harness.load(path, variant)
            for class_name, cls in harness.case_classes(module).items():
                class_id = f"{path.stem}.{class_name}"
                for method_name in harness.case_method_names(cls):
                    _mark(cls, method_name, f"{class_id}.{method_name}", variant)
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
    listed = set(expectations.KNOWN) | set(expectations.ENGINE_BUGS)
    listed |= set(expectations.MASKED) | set(expectations.MASKED.values())
    stale = sorted(listed - ids) + [
        prefix
        for prefix in expectations.SLOW
        if not any(test_id.startswith(prefix) for test_id in ids)
    ]
    assert not stale, f"Expectations name no collected test: {stale}"
