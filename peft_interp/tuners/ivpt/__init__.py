from ...registry import MethodSpec, register_method
from .config import IVPTConfig
from .model import IVPTExplanation, IVPTModel, IVPTOutput

register_method(
    MethodSpec(
        IVPTConfig,
        IVPTModel,
        family="vision",
        title="IVPT (Interpretable Visual Prompt Tuning)",
        summary="Prompts in the last blocks of the vision transformer are built from learnt concept prototypes; each "
        "prediction is the mean of per-concept class scores, and the concept maps show where each concept is.",
        citation="@inproceedings{wang2026ivpt,\n  title={Exploring Interpretability for Visual Prompt Tuning with "
        "Cross-layer Concepts},\n  author={Wang, Yubin and others},\n  booktitle={ICLR},\n  year={2026}\n}",
    )
)

__all__ = ["IVPTConfig", "IVPTExplanation", "IVPTModel", "IVPTOutput"]
