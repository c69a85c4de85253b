"""Where things are in the vision transformers we adapt.

Visual prompt tuners need the same few facts about a ViT: where its blocks and embeddings are, which LayerNorm
produces its output features, how many prefix tokens (CLS + registers) come before the patches, and the patch
grid. :func:`resolve_vision_layout` reads them off a supported model, so that tuners never branch on model classes.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from transformers import CLIPModel, CLIPVisionModel, Dinov2Model, Dinov2WithRegistersModel

SUPPORTED_VISION_MODELS = (Dinov2Model, Dinov2WithRegistersModel, CLIPVisionModel, CLIPModel)


@dataclass(frozen=True)
class VisionLayout:
    """Module paths and token geometry of a ViT backbone (paths are relative to the adapted model's root)."""

    vision_path: str  # the module whose forward(pixel_values) runs the vision tower ("" = the model itself)
    blocks_path: str  # nn.ModuleList of transformer blocks
    embeddings_path: str  # produces (B, num_prefix_tokens + num_patches, D)
    final_norm_path: str  # LayerNorm that produces the backbone's output features
    output_is_normalized: bool  # whether the vision tower's last_hidden_state already went through final_norm
    num_layers: int
    hidden_size: int
    patch_size: int
    image_size: int  # the model config's default input size
    num_prefix_tokens: int  # CLS + register tokens

    def block_name(self, index: int) -> str:
        return f"{self.blocks_path}.{index}"

    @property
    def block_names(self) -> list[str]:
        return [self.block_name(i) for i in range(self.num_layers)]


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def resolve_vision_layout(model: nn.Module) -> VisionLayout:
    """Describe the vision tower of a supported model.

    Raises:
        ValueError: if ``model`` is not one of :data:`SUPPORTED_VISION_MODELS`.
    """
    if isinstance(model, CLIPModel):
        vision_path, vision_config = "vision_model", model.config.vision_config
    elif isinstance(model, (CLIPVisionModel, Dinov2Model, Dinov2WithRegistersModel)):
        vision_path, vision_config = "", model.config
    else:
        names = ", ".join(cls.__name__ for cls in SUPPORTED_VISION_MODELS)
        raise ValueError(f"Unsupported base model {type(model).__name__}: visual prompt tuners support {names}.")

    is_clip = isinstance(model, (CLIPModel, CLIPVisionModel))
    return VisionLayout(
        vision_path=vision_path,
        blocks_path=_join(vision_path, "encoder.layers" if is_clip else "encoder.layer"),
        embeddings_path=_join(vision_path, "embeddings"),
        final_norm_path=_join(vision_path, "post_layernorm" if is_clip else "layernorm"),
        output_is_normalized=not is_clip,  # CLIP applies post_layernorm to the pooled CLS token only
        num_layers=vision_config.num_hidden_layers,
        hidden_size=vision_config.hidden_size,
        patch_size=vision_config.patch_size,
        image_size=vision_config.image_size,
        num_prefix_tokens=1 + getattr(vision_config, "num_register_tokens", 0),
    )
