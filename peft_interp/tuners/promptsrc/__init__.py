from ...registry import register_method
from .config import PromptSRCConfig
from .model import PromptSRCModel

register_method(PromptSRCConfig.method_name, PromptSRCConfig, PromptSRCModel)

__all__ = ["PromptSRCConfig", "PromptSRCModel"]
