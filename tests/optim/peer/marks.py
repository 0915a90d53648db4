"""The pytest marks of a loaded Keras test: its expectations, by test id.

Shared by the optimizer suite and the training suite: `KNOWN` tests are
strict xfails, `ENGINE_BUGS` non-strict xfails, `SLOW` ones skipped where
listed unless `LAYERWISE_PEER_FULL=1`.
"""

import os

import keras
import pytest

from tests.optim.peer import expectations

BACKEND = keras.backend.backend()
FULL = os.environ.get("LAYERWISE_PEER_FULL") == "1"


def _marks_for(test_id, variant):
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


def mark(cls, method_name, test_id, variant):
    """Marks the method on this loaded copy of the class (each variant
    loads its own copy of the file, so marks do not leak across variants)."""
    marks = _marks_for(test_id, variant)
    if marks:
        method = getattr(cls, method_name)
        for decorator in marks:
            method = decorator(method)
        setattr(cls, method_name, method)
