from ...registry import register_method
from .config import DualViewMIConfig
from .model import DualViewMIModel, ViewAgreement

register_method(DualViewMIConfig.method_name, DualViewMIConfig, DualViewMIModel)

__all__ = ["DualViewMIConfig", "DualViewMIModel", "ViewAgreement"]
