"""The hand-written prompt template of each dataset, as the papers' zero-shot CLIP baseline uses them.

These are the ``CUSTOM_TEMPLATES`` of the CoOp code base (Zhou et al., "Learning to Prompt for Vision-Language
Models", IJCV 2022; https://github.com/KaiyangZhou/CoOp, ``trainers/zsclip.py``), which CoCoOp, KgCoOp, MaPLe and
the interpretable prompt-learning papers reuse for their zero-shot rows.
"""

from __future__ import annotations

DEFAULT_TEMPLATE = "a photo of a {}."

TEMPLATES = {
    "imagenet": DEFAULT_TEMPLATE,
    "caltech101": DEFAULT_TEMPLATE,
    "oxford_pets": "a photo of a {}, a type of pet.",
    "stanford_cars": DEFAULT_TEMPLATE,
    "oxford_flowers": "a photo of a {}, a type of flower.",
    "food101": "a photo of {}, a type of food.",
    "fgvc_aircraft": "a photo of a {}, a type of aircraft.",
    "sun397": DEFAULT_TEMPLATE,
    "dtd": "{} texture.",
    "eurosat": "a centered satellite photo of {}.",
    "ucf101": "a photo of a person doing {}.",
    "imagenetv2": DEFAULT_TEMPLATE,
    "imagenet_sketch": DEFAULT_TEMPLATE,
    "imagenet_a": DEFAULT_TEMPLATE,
    "imagenet_r": DEFAULT_TEMPLATE,
    "cub": "a photo of a {}, a type of bird.",
    "conceptworld": DEFAULT_TEMPLATE,
}


def dataset_template(name: str) -> str:
    """The hand-written template of dataset ``name`` (``"a photo of a {}."`` for datasets without one)."""
    return TEMPLATES.get(name, DEFAULT_TEMPLATE)
