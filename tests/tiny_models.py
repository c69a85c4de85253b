"""Tiny randomly initialised backbones (hidden size 32, 4 layers) of every supported architecture."""

import torch
from transformers import (
    CLIPConfig,
    CLIPModel,
    CLIPVisionConfig,
    CLIPVisionModel,
    Dinov2Config,
    Dinov2Model,
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersModel,
)

IMAGE_SIZE = 28  # 4 x 4 patches of 7 px
VIT = dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64, image_size=IMAGE_SIZE, patch_size=7)


def make_backbone(kind: str, seed: int = 0) -> torch.nn.Module:
    """A tiny randomly initialised backbone; the same (kind, seed) always gives the same weights."""
    torch.manual_seed(seed)
    if kind == "dinov2":
        model = Dinov2Model(Dinov2Config(**VIT))
    elif kind == "dinov2_registers":
        model = Dinov2WithRegistersModel(Dinov2WithRegistersConfig(**VIT, num_register_tokens=4))
    elif kind == "clip_vision":
        model = CLIPVisionModel(CLIPVisionConfig(**VIT))
    elif kind == "clip":
        text = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=99)
        model = CLIPModel(CLIPConfig(vision_config=VIT, text_config=text, projection_dim=16))
    else:
        raise ValueError(kind)
    return model.eval()


BACKBONES = ["dinov2", "dinov2_registers", "clip_vision", "clip"]




def make_clip(seed: int = 0) -> torch.nn.Module:
    """A tiny CLIPModel with the real CLIP vocabulary (49,408 tokens), for the text-prompt tuners."""
    torch.manual_seed(seed)
    text = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=49408)
    return CLIPModel(CLIPConfig(vision_config=VIT, text_config=text, projection_dim=16)).eval()
