from ...registry import register_method
from .config import MaPLeConfig
from .model import MaPLeModel

register_method(MaPLeConfig.method_name, MaPLeConfig, MaPLeModel)

__all__ = ["MaPLeConfig", "MaPLeModel"]
