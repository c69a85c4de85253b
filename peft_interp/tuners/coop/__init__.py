from ...registry import MethodSpec, register_method
from .config import CoOpConfig
from .model import CoOpModel

register_method(
    MethodSpec(
        CoOpConfig,
        CoOpModel,
        family="clip",
        title="CoOp (Context Optimization)",
        summary="Learnt context vectors replace the words in front of CLIP's class names; CLIP stays frozen.",
        citation="@article{zhou2022coop,\n  title={Learning to Prompt for Vision-Language Models},\n  author={Zhou, "
        "Kaiyang and Yang, Jingkang and Loy, Chen Change and Liu, Ziwei},\n  journal={IJCV},\n  year={2022}\n}",
    )
)

__all__ = ["CoOpConfig", "CoOpModel"]
