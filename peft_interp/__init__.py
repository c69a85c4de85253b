"""peft-interp: interpretable prompt tuning for CLIP and DINOv2 as PEFT tuners.

``import peft_interp`` registers the methods with PEFT, after which ``peft.get_peft_model`` and
``peft.PeftModel.from_pretrained`` accept their configs and saved adapters.
"""

from .naming import name_concepts
from .registry import (
    INTERP_TASK_TYPE,
    AutoPeftModelForInterpretability,
    PeftModelForInterpretability,
    register_method,
)
from .tuners import (
    CoCoOpConfig,
    CoCoOpModel,
    CoOpConfig,
    CoOpModel,
    DualViewMIConfig,
    DualViewMIModel,
    IntCoOpConfig,
    IntCoOpModel,
    IPLConfig,
    IPLModel,
    IVPTConfig,
    IVPTModel,
    KgCoOpConfig,
    KgCoOpModel,
    MaPLeConfig,
    MaPLeModel,
    PromptSRCConfig,
    PromptSRCModel,
    VPTDeepConfig,
    VPTDeepModel,
)
from .tuners.explanation import Explanation

__version__ = "0.1.0.dev0"

__all__ = [
    "AutoPeftModelForInterpretability",
    "CoCoOpConfig",
    "CoCoOpModel",
    "CoOpConfig",
    "CoOpModel",
    "DualViewMIConfig",
    "DualViewMIModel",
    "Explanation",
    "IPLConfig",
    "IPLModel",
    "INTERP_TASK_TYPE",
    "IVPTConfig",
    "IVPTModel",
    "IntCoOpConfig",
    "IntCoOpModel",
    "KgCoOpConfig",
    "KgCoOpModel",
    "MaPLeConfig",
    "MaPLeModel",
    "PeftModelForInterpretability",
    "PromptSRCConfig",
    "PromptSRCModel",
    "VPTDeepConfig",
    "VPTDeepModel",
    "name_concepts",
    "register_method",
]
