"""The runnable examples in the tuners' docstrings run and print what they say."""

import doctest
import importlib

import pytest

MODULES = [
    "peft_interp.tuners.ivpt.model",
    "peft_interp.tuners.vpt.model",
    "peft_interp.tuners.coop.model",
    "peft_interp.tuners.cocoop.model",
    "peft_interp.tuners.kgcoop.model",
    "peft_interp.tuners.maple.model",
    "peft_interp.tuners.promptsrc.model",
    "peft_interp.tuners.ipl.model",
    "peft_interp.tuners.dualview_mi.model",
    "peft_interp.training.trainer",
]


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples(module_name):
    result = doctest.testmod(importlib.import_module(module_name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
