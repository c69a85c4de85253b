"""The runnable examples in the tuners' docstrings run and print what they say: every registered method's model
module has one."""

import doctest
import importlib

import pytest

from peft_interp.registry import registered_methods

MODULES = [*(spec.model_class.__module__ for spec in registered_methods().values()), "peft_interp.training.trainer"]


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples(module_name):
    result = doctest.testmod(importlib.import_module(module_name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
