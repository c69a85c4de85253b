"""PEFT tuners of peft-interp; importing this package registers them with PEFT."""

from .ivpt import IVPTConfig, IVPTModel
from .vpt import VPTDeepConfig, VPTDeepModel

__all__ = ["IVPTConfig", "IVPTModel", "VPTDeepConfig", "VPTDeepModel"]
