"""PEFT integration: registration, save/load round trip, loading without the package."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from peft import PeftModel, get_peft_model
from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING
from safetensors.torch import load_file

from peft_interp import IVPTConfig, IVPTModel, PeftModelForInterpretability, VPTDeepConfig, VPTDeepModel

from .tiny_models import BACKBONES, make_backbone


@pytest.mark.parametrize("config_cls, tuner_cls", [(IVPTConfig, IVPTModel), (VPTDeepConfig, VPTDeepModel)])
def test_methods_are_registered_with_namespaced_types(config_cls, tuner_cls):
    config = config_cls(num_classes=3)
    assert config.peft_type.value.startswith("PEFT_INTERP_")
    assert PEFT_TYPE_TO_CONFIG_MAPPING[config.peft_type] is config_cls
    assert PEFT_TYPE_TO_TUNER_MAPPING[config.peft_type] is tuner_cls
    model = get_peft_model(make_backbone("dinov2"), config)
    assert isinstance(model, PeftModel) and isinstance(model, PeftModelForInterpretability)
    assert isinstance(model.base_model, tuner_cls)


@pytest.mark.parametrize("kind", BACKBONES)
def test_save_and_reload_reproduce_logits_bit_for_bit(tmp_path, kind, images, labels):
    model = get_peft_model(make_backbone(kind), IVPTConfig(num_classes=3))
    optimizer = torch.optim.Adam(model.base_model.optimizer_param_groups())
    for _ in range(2):  # move the adapter away from its initialisation
        optimizer.zero_grad()
        model(pixel_values=images, labels=labels).loss.backward()
        optimizer.step()
    model.eval()
    expected = model(pixel_values=images)
    model.save_pretrained(tmp_path)

    saved = sorted(p.name for p in tmp_path.iterdir())
    assert "adapter_model.safetensors" in saved and not any(name.endswith(".bin") for name in saved)
    tensors = load_file(tmp_path / "adapter_model.safetensors")
    assert all(("prompt_sources" in k) or ("token_shifts" in k) or ("ivpt_head" in k) for k in tensors)
    assert sum(t.numel() for t in tensors.values()) == model.get_nb_trainable_parameters()[0]

    reloaded = PeftModel.from_pretrained(make_backbone(kind), tmp_path).eval()
    assert type(reloaded) is PeftModelForInterpretability
    actual = reloaded(pixel_values=images)
    assert torch.equal(actual.logits, expected.logits)
    assert torch.equal(actual.concept_maps, expected.concept_maps)


def test_vpt_deep_round_trip(tmp_path, images):
    model = get_peft_model(make_backbone("clip_vision"), VPTDeepConfig(num_classes=3, num_prompt_tokens=2)).eval()
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.normal_()
    expected = model(pixel_values=images).logits
    model.save_pretrained(tmp_path)
    reloaded = PeftModel.from_pretrained(make_backbone("clip_vision"), tmp_path).eval()
    assert torch.equal(reloaded(pixel_values=images).logits, expected)


def test_loading_without_importing_peft_interp_says_to_import_it(tmp_path):
    get_peft_model(make_backbone("dinov2"), IVPTConfig(num_classes=3)).save_pretrained(tmp_path)
    assert "import peft_interp" in json.loads((tmp_path / "adapter_config.json").read_text())["peft_type"]
    script = textwrap.dedent(
        f"""
        import sys
        from peft import PeftModel
        from transformers import Dinov2Config, Dinov2Model
        assert "peft_interp" not in sys.modules
        base = Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                                        intermediate_size=64, image_size=28, patch_size=7))
        PeftModel.from_pretrained(base, {str(tmp_path)!r})
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "import peft_interp to load" in result.stderr.strip().splitlines()[-1]
