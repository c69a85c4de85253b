"""peft-interp: interpretable prompt tuning for CLIP and DINOv2 as PEFT tuners.

``import peft_interp`` registers the methods with PEFT, after which ``peft.get_peft_model`` and
``peft.PeftModel.from_pretrained`` accept their configs and saved adapters.
"""

from .naming import name_concepts
from .registry import (
    INTERP_TASK_TYPE,
    AutoPeftModelForInterpretability,
    MethodSpec,
    PeftModelForInterpretability,
    register_method,
    registered_methods,
)
from . import tuners
from .tuners import *  # noqa: F403  (every method's config and model class)
from .tuners.explanation import Explanation

__version__ = "0.1.0.dev0"

__all__ = [
    *tuners.__all__,
    "AutoPeftModelForInterpretability",
    "Explanation",
    "INTERP_TASK_TYPE",
    "MethodSpec",
    "PeftModelForInterpretability",
    "name_concepts",
    "register_method",
    "registered_methods",
]
