"""Machinery shared by the CLIP text-prompt methods (CoOp, IPL, IntCoOp, DualViewMI)."""

from .config import ClipPromptConfig
from .model import ClipPromptOutput, ClipPromptTuner, ContextDecoding, ImageBatch

__all__ = ["ClipPromptConfig", "ClipPromptOutput", "ClipPromptTuner", "ContextDecoding", "ImageBatch"]
