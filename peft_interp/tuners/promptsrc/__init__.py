from ...registry import MethodSpec, register_method
from .config import PromptSRCConfig
from .model import PromptSRCModel

register_method(
    MethodSpec(
        PromptSRCConfig,
        PromptSRCModel,
        family="clip",
        title="PromptSRC (Self-regulating Prompts)",
        summary="Deep prompts in both CLIP towers kept close to the frozen model's features and logits, and averaged "
        "over epochs with Gaussian weights; CLIP stays frozen.",
        citation="@inproceedings{khattak2023promptsrc,\n  title={Self-regulating Prompts: Foundational Model Adaptation "
        "without Forgetting},\n  author={Khattak, Muhammad Uzair and Wasim, Syed Talal and Naseer, Muzammal "
        "and Khan, Salman and Yang, Ming-Hsuan and Khan, Fahad Shahbaz},\n  booktitle={ICCV},\n  year={2023}\n}",
    )
)

__all__ = ["PromptSRCConfig", "PromptSRCModel"]
