"""Keras' training, callback and saving tests, every compiled optimizer wrapped.

The files and tests `training.SELECTED` names, loaded per variant (see
`harness.VARIANTS`) and collected as `<file>.<Class>[<variant>]`, e.g.
`trainer_test.TestTrainer[catch_all]::test_recompile`. While one of them
runs, `Trainer.compile` wraps the optimizer it resolves
(`training.compile_hook`). Expectations are the optimizer suite's
(`expectations.KNOWN`, `ENGINE_BUGS`, `SLOW`), by the same test ids.
"""

import pytest

from tests.optim.peer import expectations
from tests.optim.peer import harness
from tests.optim.peer import marks
from tests.optim.peer import training


def _collect():
    collected = {}
    for variant in harness.VARIANTS:
        for path in training.files():
            module = harness.load(path, variant)
            for class_name, cls in harness.case_classes(module).items():
                class_id = f"{path.stem}.{class_name}"
                for method_name in harness.case_method_names(cls):
                    if not training.selected(path, f"{class_name}.{method_name}"):
                        # Not callable: unittest (and pytest) skip the name.
                        setattr(cls, method_name, None)
                        continue
                    marks.mark(cls, method_name, f"{class_id}.{method_name}", variant)
                cls.layerwise_peer_variant = variant
                if harness.case_method_names(cls):
                    collected[f"{class_id}[{variant.id}]"] = cls
    return collected


COLLECTED = _collect()
globals().update(COLLECTED)


@pytest.fixture(autouse=True)
def _compiled_optimizers_wrapped(request):
    variant = getattr(request.cls, "layerwise_peer_variant", None)
    if variant is None:  # This module's own tests.
        yield
        return
    with training.compile_hook(variant):
        yield


def test_every_pattern_selects_a_test():
    """A pattern selecting nothing (a test Keras renamed) is stale."""
    stale = []
    for path in training.files():
        module = harness.load(path, harness.VARIANTS[0])
        ids = [
            f"{name}.{method}"
            for name, cls in harness.case_classes(module).items()
            for method in harness.case_method_names(cls)
        ]
        relative = path.relative_to(training.KERAS_SRC).as_posix()
        for pattern in training.SELECTED[relative]:
            probe = training.SELECTED[relative]
            training.SELECTED[relative] = (pattern,)
            try:
                if not any(training.selected(path, i) for i in ids):
                    stale.append(f"{relative}: {pattern}")
            finally:
                training.SELECTED[relative] = probe
    assert not stale, f"Patterns selecting no test: {stale}"


def test_expectations_name_collected_tests():
    stems = {path.stem for path in training.files()}
    ids = {
        f"{name.split('[')[0]}.{method}"
        for name, cls in COLLECTED.items()
        for method in harness.case_method_names(cls)
    }
    listed = set(expectations.KNOWN) | set(expectations.ENGINE_BUGS)
    stale = sorted(i for i in listed if i.split(".")[0] in stems and i not in ids)
    stale += [
        prefix
        for prefix in expectations.SLOW
        if prefix.split(".")[0] in stems
        and not any(test_id.startswith(prefix) for test_id in ids)
    ]
    assert not stale, f"Expectations name no collected test: {stale}"


def test_docs_list_the_selection():
    text = expectations.DOCS.read_text()
    documented = expectations.documented_part(text, training.BEGIN, training.END)
    assert documented == training.render(), (
        "docs/peer_suite.md is out of date: run "
        "`python -m tests.optim.peer.expectations`"
    )
