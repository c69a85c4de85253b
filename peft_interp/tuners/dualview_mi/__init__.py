from ...registry import MethodSpec, register_method
from .config import DualViewMIConfig
from .model import DualViewMIModel, ViewAgreement

register_method(
    MethodSpec(
        DualViewMIConfig,
        DualViewMIModel,
        family="clip",
        title="DualViewMI (dual-view mutual-information prompt tuning)",
        summary="A learnt CLIP context (the soft view) tied to hand-crafted prompts (the general view) by maximising "
        "their mutual information, with a class-wise visual augmentation.",
        citation="@article{zhang2024generalizable,\n  title={Generalizable Prompt Tuning for Vision-Language Models},\n "
        " author={Zhang, Qian},\n  journal={arXiv:2410.03189},\n  year={2024}\n}",
    )
)

__all__ = ["DualViewMIConfig", "DualViewMIModel", "ViewAgreement"]
