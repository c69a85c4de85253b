"""PEFT tuners of peft-interp; importing this package registers them with PEFT."""

from .coop import CoOpConfig, CoOpModel
from .dualview_mi import DualViewMIConfig, DualViewMIModel
from .intcoop import IntCoOpConfig, IntCoOpModel
from .ipl import IPLConfig, IPLModel
from .ivpt import IVPTConfig, IVPTModel
from .vpt import VPTDeepConfig, VPTDeepModel

__all__ = [
    "CoOpConfig",
    "CoOpModel",
    "DualViewMIConfig",
    "DualViewMIModel",
    "IPLConfig",
    "IPLModel",
    "IVPTConfig",
    "IVPTModel",
    "IntCoOpConfig",
    "IntCoOpModel",
    "VPTDeepConfig",
    "VPTDeepModel",
]
