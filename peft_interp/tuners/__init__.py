"""PEFT tuners of peft-interp; importing this package registers them with PEFT.

Each method's package registers itself (``register_method(MethodSpec(...))`` in its ``__init__.py``) when imported
here, in the order methods are listed in (``peft-interp train --method`` choices, messages); a method whose package
imports another's (IPL's config imports IntCoOp's) comes after it.
"""

from .ivpt import IVPTConfig, IVPTModel
from .vpt import VPTDeepConfig, VPTDeepModel
from .coop import CoOpConfig, CoOpModel
from .cocoop import CoCoOpConfig, CoCoOpModel
from .kgcoop import KgCoOpConfig, KgCoOpModel
from .maple import MaPLeConfig, MaPLeModel
from .promptsrc import PromptSRCConfig, PromptSRCModel
from .intcoop import IntCoOpConfig, IntCoOpModel
from .ipl import IPLConfig, IPLModel
from .dualview_mi import DualViewMIConfig, DualViewMIModel

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
