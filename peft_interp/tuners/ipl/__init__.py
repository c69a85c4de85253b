from ...registry import register_method
from .config import IPLConfig
from .model import HybridPromptDecoding, IPLModel, register_context_learner

register_method(IPLConfig.method_name, IPLConfig, IPLModel)

__all__ = ["HybridPromptDecoding", "IPLConfig", "IPLModel", "register_context_learner"]
