from ...registry import register_method
from .config import CoCoOpConfig
from .model import CoCoOpModel

register_method(CoCoOpConfig.method_name, CoCoOpConfig, CoCoOpModel)

__all__ = ["CoCoOpConfig", "CoCoOpModel"]
