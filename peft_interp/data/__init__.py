"""Data for peft_interp: the ConceptWorld synthetic dataset and OpenAI CLIP's tokenizer, offline, and the image
preprocessing every path shares (`preprocessing`).

Names are imported lazily (on first access), so `import peft_interp.data` stays cheap: `datasets` is only imported
with ConceptWorld and `transformers` with the tokenizer or the preprocessing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING


_LAZY_IMPORTS = {
    "conceptworld": (
        "ATTRIBUTE_KINDS",
        "BirdClass",
        "COLORS",
        "ConceptWorldConfig",
        "PART_IDS",
        "PART_NAMES",
        "PART_SHAPES",
        "PATTERNS",
        "RandomAffine",
        "SPLITS",
        "affine_matrix",
        "all_attribute_words",
        "all_classes",
        "apply_affine",
        "class_names",
        "load_conceptworld",
        "render_sample",
        "split_classes",
    ),
    "preprocessing": (
        "ImageTransform",
        "image_statistics",
        "image_transform",
    ),
    "tokenizer": (
        "CLIP_CONTEXT_LENGTH",
        "CLIP_TOKENIZER_DIR",
        "OpenAICLIPTokenizer",
        "clean_clip_text",
        "load_clip_tokenizer",
    ),
}
_MODULE_OF = {name: module for module, names in _LAZY_IMPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)

if TYPE_CHECKING:
    from .conceptworld import (  # noqa: F401
        ATTRIBUTE_KINDS,
        COLORS,
        PART_IDS,
        PART_NAMES,
        PART_SHAPES,
        PATTERNS,
        SPLITS,
        BirdClass,
        ConceptWorldConfig,
        RandomAffine,
        affine_matrix,
        all_attribute_words,
        all_classes,
        apply_affine,
        class_names,
        load_conceptworld,
        render_sample,
        split_classes,
    )
    from .preprocessing import ImageTransform, image_statistics, image_transform  # noqa: F401
    from .tokenizer import (  # noqa: F401
        CLIP_CONTEXT_LENGTH,
        CLIP_TOKENIZER_DIR,
        OpenAICLIPTokenizer,
        clean_clip_text,
        load_clip_tokenizer,
    )


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_MODULE_OF[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
