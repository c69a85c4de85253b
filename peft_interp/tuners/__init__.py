"""PEFT tuners of peft-interp; importing this package registers them with PEFT."""

from .cocoop import CoCoOpConfig, CoCoOpModel
from .coop import CoOpConfig, CoOpModel
from .dualview_mi import DualViewMIConfig, DualViewMIModel
from .intcoop import IntCoOpConfig, IntCoOpModel
from .ipl import IPLConfig, IPLModel
from .ivpt import IVPTConfig, IVPTModel
from .kgcoop import KgCoOpConfig, KgCoOpModel
from .maple import MaPLeConfig, MaPLeModel
from .promptsrc import PromptSRCConfig, PromptSRCModel
from .vpt import VPTDeepConfig, VPTDeepModel

__all__ = [
    "CoCoOpConfig",
    "CoCoOpModel",
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
    "KgCoOpConfig",
    "KgCoOpModel",
    "MaPLeConfig",
    "MaPLeModel",
    "PromptSRCConfig",
    "PromptSRCModel",
    "VPTDeepConfig",
    "VPTDeepModel",
]
