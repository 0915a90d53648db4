"""The harness wraps what it must, and only inside the loaded test modules."""

import keras
import pytest

import layerwise as lw
from tests.optim.peer import expectations
from tests.optim.peer import harness


def _load(stem, variant_id="catch_all"):
    (variant,) = [v for v in harness.VARIANTS if v.id == variant_id]
    return harness.load(harness.KERAS_OPTIMIZERS_DIR / f"{stem}_test.py", variant)


def test_every_builtin_optimizer_is_wrapped():
    names = {cls.__name__ for cls in harness.WRAPPED_CLASSES}
    public = {
        name
        for name in dir(keras.optimizers)
        if isinstance(getattr(keras.optimizers, name), type)
        and issubclass(getattr(keras.optimizers, name), keras.optimizers.Optimizer)
    }
    not_update_rules = {"Optimizer", "LossScaleOptimizer", "MultiOptimizer"}
    assert public - not_update_rules <= names
    assert "Lamb" in names  # Not exported by `keras.optimizers` in every version.


def test_every_keras_test_file_contributes_test_classes():
    for path in harness.keras_test_files():
        for variant in harness.VARIANTS:
            classes = harness.case_classes(harness.load(path, variant))
            assert classes, f"{path.name} defines no TestCase class"
            assert all(harness.case_method_names(c) for c in classes.values())


@pytest.mark.parametrize("variant_id", [v.id for v in harness.VARIANTS])
def test_imported_class_builds_the_wrapper(variant_id):
    module = _load("adam", variant_id)
    optimizer = module.Adam(learning_rate=0.5, beta_1=0.8)
    assert isinstance(optimizer, lw.LayerwiseOptimizer)
    # On torch, Keras builds a backend subclass of `Adam`.
    assert isinstance(optimizer.inner_optimizer, keras.optimizers.Adam)
    assert optimizer.inner_optimizer.get_config()["beta_1"] == 0.8
    assert [r.name for r in optimizer.rules] == (
        ["all"] if variant_id == "catch_all" else []
    )
    assert isinstance(optimizer, module.Adam)
    assert isinstance(keras.optimizers.Adam(), module.Adam)
    assert not isinstance(lw.LayerwiseOptimizer(keras.optimizers.SGD()), module.Adam)
    # `import keras` inside the test file sees the same substitution.
    assert isinstance(module.keras.optimizers.Adam(), lw.LayerwiseOptimizer)
    assert module.keras.layers.Dense is keras.layers.Dense


def test_subclasses_match_through_the_wrapper():
    module = _load("optimizer")
    adamw = module.optimizers.AdamW()
    assert isinstance(adamw, module.optimizers.Adam)
    assert issubclass(keras.optimizers.AdamW, module.optimizers.Adam)


def test_namespace_access_get_and_deserialize_wrap():
    optimizers = _load("optimizer").optimizers
    for identifier in ("sgd", {"class_name": "adamw", "config": {"weight_decay": 0.1}}):
        optimizer = optimizers.get(identifier)
        assert isinstance(optimizer, lw.LayerwiseOptimizer)
    wrapped = optimizers.Adam(learning_rate=0.25)
    revived = optimizers.deserialize(optimizers.serialize(wrapped))
    assert isinstance(revived, lw.LayerwiseOptimizer)
    assert revived.get_config() == wrapped.get_config()
    plain_config = keras.optimizers.serialize(keras.optimizers.SGD(0.1))
    assert isinstance(optimizers.deserialize(plain_config), lw.LayerwiseOptimizer)
    assert optimizers.get(wrapped) is wrapped


def test_from_config_goes_through_the_wrapper():
    adam = _load("adam").Adam
    wrapped = adam(learning_rate=0.25)
    revived = adam.from_config(wrapped.get_config())
    assert isinstance(revived, lw.LayerwiseOptimizer)
    assert revived.get_config() == wrapped.get_config()
    plain_config = keras.optimizers.Adam(0.25).get_config()
    assert isinstance(adam.from_config(plain_config), lw.LayerwiseOptimizer)


def test_wrappers_of_optimizers_stay_real_around_wrapped_ones():
    module = _load("optimizer_sparse")
    assert module.optimizers.LossScaleOptimizer is keras.optimizers.LossScaleOptimizer
    assert module.optimizers.Optimizer is keras.optimizers.Optimizer
    # Evaluated when the module ran: the parametrization holds factories.
    classes = {c["testcase_name"]: c["optimizer_class"] for c in module.TEST_CASES}
    assert isinstance(classes["adam"], harness.WrappedOptimizerClass)
    assert isinstance(module.optimizers.get("adam"), lw.LayerwiseOptimizer)
    scaled = classes["loss_scale_optimizer_sgd"]()
    assert type(scaled) is keras.optimizers.LossScaleOptimizer
    assert isinstance(scaled.inner_optimizer, lw.LayerwiseOptimizer)
    # A class the test file defines itself is not Keras': left alone.
    assert classes["scatter_update"] is module.ScatterUpdateOptimizer


def test_keras_itself_is_untouched():
    for stem in ("adam", "optimizer", "multi_optimizer"):
        _load(stem)
    plain = keras.optimizers.get("adam")
    assert isinstance(plain, keras.optimizers.Adam)
    assert not isinstance(plain, lw.LayerwiseOptimizer)
    from keras.src.optimizers import adam

    assert adam.Adam is keras.optimizers.Adam
    assert isinstance(keras.optimizers.Adam, type)


def test_catch_all_rule_matches_variables_of_every_kind():
    optimizer = _load("adam").Adam()
    with keras.name_scope("dense_1"):
        scoped = keras.Variable([[1.0]], name="kernel")
    variables = [keras.Variable(1.0), keras.Variable(1.0, name="exclude"), scoped]
    optimizer.build(variables)
    assert harness.unmatched_variables() == []
    assert [p.rules for p in optimizer.plan.variables] == [("all",)] * 3


def test_docs_list_the_expectations():
    text = expectations.DOCS.read_text()
    assert expectations.documented_part(text) == expectations.render(), (
        "docs/peer_suite.md is out of date: run "
        "`python -m tests.optim.peer.expectations`"
    )
