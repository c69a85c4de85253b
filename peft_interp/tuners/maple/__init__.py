from ...registry import MethodSpec, register_method
from .config import MaPLeConfig
from .model import MaPLeModel

register_method(
    MethodSpec(
        MaPLeConfig,
        MaPLeModel,
        family="clip",
        title="MaPLe (Multi-modal Prompt Learning)",
        summary="Deep prompts in CLIP's text and image towers, the image prompts a learnt linear function of the text "
        "prompts of the same depth; CLIP stays frozen.",
        citation="@inproceedings{khattak2023maple,\n  title={MaPLe: Multi-modal Prompt Learning},\n  author={Khattak, "
        "Muhammad Uzair and Rasheed, Hanoona and Maaz, Muhammad and Khan, Salman and Khan, Fahad Shahbaz},\n  "
        "booktitle={CVPR},\n  year={2023}\n}",
    )
)

__all__ = ["MaPLeConfig", "MaPLeModel"]
