from ...registry import MethodSpec, register_method
from .config import VPTDeepConfig
from .model import VPTDeepModel

register_method(
    MethodSpec(
        VPTDeepConfig,
        VPTDeepModel,
        family="vision",
        title="VPT-deep (Visual Prompt Tuning)",
        summary="Learnt prompt tokens in every block of the vision transformer and a linear head on the CLS token.",
        citation="@inproceedings{jia2022vpt,\n  title={Visual Prompt Tuning},\n  author={Jia, Menglin and Tang, Luming "
        "and Chen, Bor-Chun and Cardie, Claire and Belongie, Serge and Hariharan, Bharath and Lim, Ser-Nam},\n "
        " booktitle={ECCV},\n  year={2022}\n}",
    )
)

__all__ = ["VPTDeepConfig", "VPTDeepModel"]
