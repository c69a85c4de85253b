from ...registry import register_method
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

register_method(IntCoOpConfig.method_name, IntCoOpConfig, IntCoOpModel)

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
