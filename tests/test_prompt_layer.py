"""The shared prompted-block layer and VPT-deep, against a hand-written VPT-deep forward."""

import pytest
import torch
from peft import get_peft_model

from peft_interp import VPTDeepConfig
from peft_interp.backbones import resolve_vision_layout
from peft_interp.tuners.layers import PromptedBlock

from .tiny_models import BACKBONES, make_backbone


@pytest.mark.parametrize("kind, prefix", [("dinov2", 1), ("dinov2_registers", 5), ("clip_vision", 1), ("clip", 1)])
def test_layout_counts_prefix_tokens_from_config(kind, prefix):
    layout = resolve_vision_layout(make_backbone(kind))
    assert layout.num_prefix_tokens == prefix
    assert layout.num_layers == 4 and layout.patch_size == 7


def test_unsupported_model_is_rejected():
    with pytest.raises(ValueError, match="Dinov2Model, Dinov2WithRegistersModel, CLIPVisionModel, CLIPModel"):
        resolve_vision_layout(torch.nn.Linear(2, 2))


def reference_vpt_deep(base, layout, pixel_values, prompts_per_block, head):
    """VPT-deep written out by hand: append each block's prompts, run it, drop them."""
    vision = base.get_submodule(layout.vision_path)
    hidden = vision.embeddings(pixel_values)
    if hasattr(vision, "pre_layrnorm"):
        hidden = vision.pre_layrnorm(hidden)
    num_tokens = hidden.shape[1]
    for block, prompts in zip(base.get_submodule(layout.blocks_path), prompts_per_block):
        hidden = block(torch.cat([hidden, prompts.expand(hidden.shape[0], -1, -1)], dim=1), None)[:, :num_tokens]
    cls_token = base.get_submodule(layout.final_norm_path)(hidden)[:, 0]
    return head(cls_token)


@pytest.mark.parametrize("kind", BACKBONES)
def test_vpt_deep_matches_hand_written_forward(kind, images):
    model = get_peft_model(make_backbone(kind), VPTDeepConfig(num_classes=3, num_prompt_tokens=3))
    tuner = model.base_model
    blocks = [tuner.model.get_submodule(name) for name in tuner.layout.block_names]
    assert all(isinstance(block, PromptedBlock) for block in blocks)
    prompts = [block.prompt_sources["default"].tokens for block in blocks]

    expected = reference_vpt_deep(make_backbone(kind), tuner.layout, images, prompts, tuner.vpt_head["default"])
    torch.testing.assert_close(model(pixel_values=images).logits, expected, rtol=1e-5, atol=1e-6)


def test_prompted_block_drops_prompts_and_keeps_length(images):
    model = get_peft_model(make_backbone("dinov2"), VPTDeepConfig(num_classes=3, num_prompted_layers=1))
    block = model.base_model.model.encoder.layer[3]
    hidden = torch.randn(2, 17, 32)
    prompts = block.prompt_sources["default"](hidden)
    assert prompts.shape == (2, 4, 32)
    expected = block.base_layer(torch.cat([hidden, prompts], dim=1))[:, :17]
    assert torch.equal(block(hidden), expected)
    with model.disable_adapter():
        assert torch.equal(block(hidden), block.base_layer(hidden))


def test_clip_text_tower_is_untouched(images):
    base = make_backbone("clip")
    input_ids = torch.tensor([[0, 5, 7, 98], [0, 9, 98, 1]])
    expected_text = base.get_text_features(input_ids=input_ids).pooler_output
    model = get_peft_model(base, VPTDeepConfig(num_classes=3))
    wrapped = [name for name, module in model.named_modules() if isinstance(module, PromptedBlock)]
    assert wrapped and all(".vision_model." in name for name in wrapped)
    text_features = model.base_model.model.get_text_features(input_ids=input_ids).pooler_output
    assert torch.equal(text_features, expected_text)


def test_vpt_deep_last_layers_only():
    model = get_peft_model(make_backbone("dinov2"), VPTDeepConfig(num_classes=3, num_prompted_layers=2))
    wrapped = [name for name, module in model.named_modules() if isinstance(module, PromptedBlock)]
    assert [name.removeprefix("base_model.model.") for name in wrapped] == ["encoder.layer.2", "encoder.layer.3"]
    assert model.get_nb_trainable_parameters()[0] == 2 * 4 * 32 + 32 * 3 + 3
