from ...registry import MethodSpec, register_method
from .config import KgCoOpConfig
from .model import KgCoOpModel

register_method(
    MethodSpec(
        KgCoOpConfig,
        KgCoOpModel,
        family="clip",
        title="KgCoOp (Knowledge-guided Context Optimization)",
        summary="A CoOp context trained to stay close to the hand-crafted prompts' class features; CLIP stays frozen.",
        citation="@inproceedings{yao2023kgcoop,\n  title={Visual-Language Prompt Tuning with Knowledge-guided Context "
        "Optimization},\n  author={Yao, Hantao and Zhang, Rui and Xu, Changsheng},\n  booktitle={CVPR},\n  "
        "year={2023}\n}",
    )
)

__all__ = ["KgCoOpConfig", "KgCoOpModel"]
