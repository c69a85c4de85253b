from ...registry import register_method
from .config import IPLConfig
from .model import HybridPromptDecoding, IPLModel, register_context_learner

register_method(IPLConfig.method_name, IPLConfig, IPLModel)


def _register_learners() -> None:
    """CoCoOp and KgCoOp keep CoOp's layout and context, so IPL splits their context span as it does CoOp's.
    (MaPLe and PromptSRC replace the soft span's hidden states with deep prompts of their own size: not registered
    yet, their deep-prompt mask would have to cover only the class context ``P``.)"""
    from ..cocoop import CoCoOpConfig, CoCoOpModel
    from ..kgcoop import KgCoOpConfig, KgCoOpModel

    register_context_learner("cocoop", CoCoOpModel, CoCoOpConfig)
    register_context_learner("kgcoop", KgCoOpModel, KgCoOpConfig)


_register_learners()

__all__ = ["HybridPromptDecoding", "IPLConfig", "IPLModel", "register_context_learner"]
