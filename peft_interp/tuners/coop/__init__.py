from ...registry import register_method
from .config import CoOpConfig
from .model import CoOpModel

register_method(CoOpConfig.method_name, CoOpConfig, CoOpModel)

__all__ = ["CoOpConfig", "CoOpModel"]
