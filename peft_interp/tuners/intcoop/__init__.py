from ...registry import MethodSpec, register_method
from .attributes import (
    CaptionerAttributes,
    ConceptWorldAttributes,
    LabelFileAttributes,
    ZeroShotAttributes,
    add_attribute_column,
    attribute_source_from_spec,
    attributes_of,
    clean_adjective,
    save_attribute_file,
)
from .config import IntCoOpConfig
from .model import IntCoOpExplanation, IntCoOpModel

register_method(
    MethodSpec(
        IntCoOpConfig,
        IntCoOpModel,
        family="clip",
        title="IntCoOp (interpretability-aware CLIP prompts)",
        summary="CLIP context vectors conditioned on each image by attention, with an attribute word predicted per "
        "image and placed before the class name.",
        citation="@inproceedings{ghosal2024intcoop,\n  title={IntCoOp: Interpretability-Aware Vision-Language Prompt "
        "Tuning},\n  author={Ghosal, Soumya Suvra and Basu, Samyadeep and Feizi, Soheil and Manocha, "
        "Dinesh},\n  booktitle={EMNLP},\n  year={2024}\n}",
    )
)

__all__ = [
    "CaptionerAttributes",
    "ConceptWorldAttributes",
    "IntCoOpConfig",
    "IntCoOpExplanation",
    "IntCoOpModel",
    "LabelFileAttributes",
    "ZeroShotAttributes",
    "add_attribute_column",
    "attribute_source_from_spec",
    "attributes_of",
    "clean_adjective",
    "save_attribute_file",
]
