"""One row per registered method, shared by the conformance and loading-route tests, which run every check on every
row. A new method adds one row here; ``test_every_registered_method_has_one_row`` (tests/test_conformance.py) fails
until it does."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from peft import PeftConfig
from transformers import CLIPConfig, CLIPModel

from peft_interp import (
    CoCoOpConfig,
    CoOpConfig,
    DualViewMIConfig,
    IntCoOpConfig,
    IPLConfig,
    IVPTConfig,
    KgCoOpConfig,
    MaPLeConfig,
    PromptSRCConfig,
    VPTDeepConfig,
)
from peft_interp.registry import method_spec

from .tiny_models import VIT, make_backbone, make_clip

NAMES = ["cat", "dog", "red bird"]


def make_deeper_clip(seed: int = 0) -> CLIPModel:
    """``make_clip`` with one more text layer: a text prompt's weights would fit it, the base-model check must not."""
    torch.manual_seed(seed)
    text = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64, vocab_size=49408)
    return CLIPModel(CLIPConfig(vision_config=VIT, text_config=text, projection_dim=16)).eval()


class Method(NamedTuple):
    name: str
    make_base: Callable[[], torch.nn.Module]
    make_config: Callable[[], PeftConfig]
    make_other_base: Callable[[], torch.nn.Module]  # a different base model the adapter must refuse
    differing_key: str  # the first base-model signature key that differs on make_other_base (named in the refusal)

    @property
    def is_clip(self) -> bool:
        return method_spec(self.name).family == "clip"


DINOV2, TEXT_LAYERS = (lambda: make_backbone("dinov2")), "text_config.num_hidden_layers"

METHODS = [
    Method("ivpt", DINOV2, lambda: IVPTConfig(num_classes=3, class_names=NAMES),
           lambda: make_backbone("dinov2_registers"), "model_type"),
    Method("vpt_deep", DINOV2, lambda: VPTDeepConfig(num_classes=3, num_prompt_tokens=2),
           lambda: make_backbone("clip_vision"), "model_type"),
    Method("coop", make_clip, lambda: CoOpConfig(class_names=NAMES), make_deeper_clip, TEXT_LAYERS),
    Method("ipl", make_clip, lambda: IPLConfig(class_names=NAMES), make_deeper_clip, TEXT_LAYERS),
    Method("intcoop", make_clip, lambda: IntCoOpConfig(class_names=NAMES, visual_prompt_depth=1), make_deeper_clip,
           TEXT_LAYERS),
    Method("dualview_mi", make_clip, lambda: DualViewMIConfig(class_names=NAMES), make_deeper_clip, TEXT_LAYERS),
    Method("cocoop", make_clip, lambda: CoCoOpConfig(class_names=NAMES), make_deeper_clip, TEXT_LAYERS),
    Method("kgcoop", make_clip, lambda: KgCoOpConfig(class_names=NAMES), make_deeper_clip, TEXT_LAYERS),
    Method("maple", make_clip, lambda: MaPLeConfig(class_names=NAMES, prompt_depth=2), make_deeper_clip, TEXT_LAYERS),
    Method("promptsrc", make_clip, lambda: PromptSRCConfig(class_names=NAMES, text_prompt_depth=2,
                                                          vision_prompt_depth=2), make_deeper_clip, TEXT_LAYERS),
]  # fmt: skip

METHODS_BY_NAME = {method.name: method for method in METHODS}
