from ...registry import register_method
from .config import KgCoOpConfig
from .model import KgCoOpModel

register_method(KgCoOpConfig.method_name, KgCoOpConfig, KgCoOpModel)

__all__ = ["KgCoOpConfig", "KgCoOpModel"]
