from ...registry import register_method
from .config import DualViewMIConfig
from .model import DualViewMIModel, ViewsExplanation

register_method(DualViewMIConfig.method_name, DualViewMIConfig, DualViewMIModel)

__all__ = ["DualViewMIConfig", "DualViewMIModel", "ViewsExplanation"]
