"""PEFT tuners of peft-interp; importing this package registers them with PEFT."""

from .coop import CoOpConfig, CoOpModel
from .ipl import IPLConfig, IPLModel
from .ivpt import IVPTConfig, IVPTModel
from .vpt import VPTDeepConfig, VPTDeepModel

__all__ = ["CoOpConfig", "CoOpModel", "IPLConfig", "IPLModel", "IVPTConfig", "IVPTModel", "VPTDeepConfig", "VPTDeepModel"]
