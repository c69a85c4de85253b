from ...registry import MethodSpec, register_method
from .config import IPLConfig
from .model import HybridPromptDecoding, IPLModel, register_context_learner

register_method(
    MethodSpec(
        IPLConfig,
        IPLModel,
        family="clip",
        title="IPL (Interpretable Prompt Learning)",
        summary="A CoOp-style CLIP context made readable: human-readable, diverse vocabulary words are selected for it "
        "and the context is pulled toward them, so the learnt prompt can be read.",
        citation="@article{wang2026ipl,\n  title={Joint Semantic Token Selection and Prompt Optimization for "
        "Interpretable Prompt Learning},\n  author={Wang and Zhao and Gong and Yin and Sun},\n  "
        "journal={arXiv:2605.04425},\n  year={2026}\n}",
    )
)


def _register_learners() -> None:
    """CoCoOp and KgCoOp keep CoOp's layout and context, so IPL splits their context span as it does CoOp's. MaPLe
    and PromptSRC too; their deep text prompts take over only the class context ``P`` (``_deep_context_rows``)."""
    from ..cocoop import CoCoOpConfig, CoCoOpModel
    from ..kgcoop import KgCoOpConfig, KgCoOpModel
    from ..maple import MaPLeConfig, MaPLeModel
    from ..promptsrc import PromptSRCConfig, PromptSRCModel

    register_context_learner("cocoop", CoCoOpModel, CoCoOpConfig)
    register_context_learner("kgcoop", KgCoOpModel, KgCoOpConfig)
    register_context_learner("maple", MaPLeModel, MaPLeConfig)
    register_context_learner("promptsrc", PromptSRCModel, PromptSRCConfig)


_register_learners()

__all__ = ["HybridPromptDecoding", "IPLConfig", "IPLModel", "register_context_learner"]
