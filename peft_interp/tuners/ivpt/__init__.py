from ...registry import register_method
from .config import IVPTConfig
from .model import IVPTExplanation, IVPTModel, IVPTOutput

register_method(IVPTConfig.method_name, IVPTConfig, IVPTModel)

__all__ = ["IVPTConfig", "IVPTExplanation", "IVPTModel", "IVPTOutput"]
