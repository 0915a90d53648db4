"""The `Example:` sections of the public docstrings run and print what they
show."""

import doctest
import importlib
import pkgutil

import keras
import numpy as np
import pytest

import layerwise

# Every module of the package, found by walking it: a new module is covered
# without being listed here.
MODULES = [
    importlib.import_module(info.name)
    for info in pkgutil.walk_packages(layerwise.__path__, "layerwise.")
    if not info.name.startswith(("layerwise._internals", "layerwise.demo"))
]
# Modules whose public functions and classes carry `Example:` sections.
WITH_EXAMPLES = [m for m in MODULES if doctest.DocTestFinder().find(m)
                 and any(t.examples for t in doctest.DocTestFinder().find(m))]


@pytest.mark.parametrize("module", WITH_EXAMPLES, ids=lambda m: m.__name__)
def test_docstring_examples_run(module):
    # Keras' convention: examples assume `keras`, `np` (and here `lw`).
    result = doctest.testmod(
        module,
        extraglobs={"keras": keras, "np": np, "lw": layerwise},
        optionflags=doctest.ELLIPSIS,
        verbose=False,
    )
    assert result.attempted > 0, f"{module.__name__} has no examples"
    assert result.failed == 0


def test_every_public_name_is_documented():
    for name in layerwise.__all__:
        obj = getattr(layerwise, name)
        assert obj.__doc__ and obj.__doc__.strip(), f"layerwise.{name} has no docstring"


def test_registered_names_are_unique():
    # Keras' registry is a dict: a second class registered under the same
    # name would silently replace the first at load time.
    classes = {}
    for module in MODULES:
        for value in vars(module).values():
            if isinstance(value, type) and value.__module__ == module.__name__:
                name = keras.saving.get_registered_name(value)
                if name.startswith("layerwise>"):
                    assert name not in classes, (name, classes.get(name), value)
                    classes[name] = value
    for name, cls in classes.items():
        assert keras.saving.get_registered_object(name) is cls, name
    assert len(classes) > 20
