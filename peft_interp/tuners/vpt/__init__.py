from ...registry import register_method
from .config import VPTDeepConfig
from .model import VPTDeepModel

register_method(VPTDeepConfig.method_name, VPTDeepConfig, VPTDeepModel)

__all__ = ["VPTDeepConfig", "VPTDeepModel"]
