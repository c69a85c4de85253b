"""Machinery shared by the visual prompt tuners (VPT-deep, IVPT)."""

from .config import VisualPromptConfig
from .model import VisualPromptTuner

__all__ = ["VisualPromptConfig", "VisualPromptTuner"]
