from ...registry import register_method
from .config import IPLConfig
from .model import IPLModel

register_method(IPLConfig.method_name, IPLConfig, IPLModel)

__all__ = ["IPLConfig", "IPLModel"]
