"""PEFT tuners of peft-interp; importing this package registers them with PEFT."""

from .coop import CoOpConfig, CoOpModel
from .ivpt import IVPTConfig, IVPTModel
from .vpt import VPTDeepConfig, VPTDeepModel

__all__ = ["CoOpConfig", "CoOpModel", "IVPTConfig", "IVPTModel", "VPTDeepConfig", "VPTDeepModel"]
