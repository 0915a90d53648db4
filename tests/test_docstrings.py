"""The `Example:` sections of the public docstrings run and print what they
show."""

import doctest

import pytest

import layerwise
from layerwise import optimizer
from layerwise import rules
from layerwise import transforms

MODULES = [optimizer, rules, transforms]


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_docstring_examples_run(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.attempted > 0, f"{module.__name__} has no examples"
    assert result.failed == 0


def test_every_public_name_is_documented():
    for name in layerwise.__all__:
        obj = getattr(layerwise, name)
        assert obj.__doc__ and obj.__doc__.strip(), f"layerwise.{name} has no docstring"
