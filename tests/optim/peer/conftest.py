"""Keras' test-suite conventions the loaded Keras test files rely on."""

import keras
import pytest

from tests.optim.peer import harness

# Keras' conftest: tests needing a trainer are skipped where there is none.
_NO_TRAINER_BACKENDS = ("numpy", "openvino")


@pytest.fixture(autouse=True)
def _seed_and_clear():
    """Overrides the suite-wide fixture of the same name: Keras' `TestCase`
    clears the session in its `setUp` (without the full garbage collection
    `clear_session()` runs by default, which costs about a second per test
    here, several minutes over this suite)."""
    keras.utils.set_random_seed(1234)
    yield


@pytest.fixture(autouse=True)
def _rules_match_every_variable():
    """The catch-all variant is only meaningful if its rule matches every
    variable a test builds its optimizer on (whatever its path)."""
    harness.forget_created()
    yield
    unmatched = harness.unmatched_variables()
    harness.forget_created()
    assert not unmatched, f"The catch-all rule matched no rule for: {unmatched}"


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "requires_trainable_backend: (Keras' marker) the test trains a model",
    )


def pytest_collection_modifyitems(config, items):
    if keras.backend.backend() not in _NO_TRAINER_BACKENDS:
        return
    skip = pytest.mark.skip(reason="Keras: no trainer on this backend")
    for item in items:
        if "requires_trainable_backend" in item.keywords:
            item.add_marker(skip)
