from ...registry import MethodSpec, register_method
from .config import CoCoOpConfig
from .model import CoCoOpModel

register_method(
    MethodSpec(
        CoCoOpConfig,
        CoCoOpModel,
        family="clip",
        title="CoCoOp (Conditional Context Optimization)",
        summary="A CoOp context shifted per image by a small meta-net of the image feature; CLIP stays frozen.",
        citation="@inproceedings{zhou2022cocoop,\n  title={Conditional Prompt Learning for Vision-Language Models},\n  "
        "author={Zhou, Kaiyang and Yang, Jingkang and Loy, Chen Change and Liu, Ziwei},\n  booktitle={CVPR},\n "
        " year={2022}\n}",
    )
)

__all__ = ["CoCoOpConfig", "CoCoOpModel"]
