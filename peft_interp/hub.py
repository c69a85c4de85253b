"""Deprecated: renamed :mod:`peft_interp.shipped` (model cards written before the rename import from here)."""

import warnings

from .shipped import *  # noqa: F403
from .shipped import __all__  # noqa: F401

warnings.warn("peft_interp.hub is renamed peft_interp.shipped", DeprecationWarning, stacklevel=2)
