"""A method is described once, by the ``MethodSpec`` its package registers: the command line, the pipeline, the
recipes, the benchmark and the model cards read every method from the registry, so a method registered from outside
the package (here a toy copy of CoOp) works everywhere without touching them."""

from __future__ import annotations

import json

import pytest
import torch
from huggingface_hub import ModelCard
from peft import PeftModel, get_peft_model
from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_PREFIX_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING

from peft_interp import CoOpConfig, CoOpModel, IVPTConfig, IVPTModel, registry
from peft_interp.benchmark import BenchmarkConfig
from peft_interp.cli import _default_model, build_parser
from peft_interp.pipeline import check_adapter_folder, check_image_size, method_config
from peft_interp.registry import MethodSpec, method_spec, register_method, registered_methods
from peft_interp.sharing import save_for_hub
from peft_interp.training.augment import CoOpTrainTransform, IVPTTrainTransform, recipe_train_transform

from .tiny_models import make_backbone, make_clip

NAMES = ["cat", "dog", "red bird"]


class ToyConfig(CoOpConfig):
    method_name = "toy_coop"


class ToyModel(CoOpModel):
    pass


@pytest.fixture
def toy(monkeypatch) -> MethodSpec:
    """``toy_coop`` registered for one test; the registry and PEFT's mappings are restored afterwards."""
    monkeypatch.setattr(registry, "_METHODS", dict(registry._METHODS))
    peft_type = registry.peft_type_for(ToyConfig.method_name)
    for mapping in (PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING, PEFT_TYPE_TO_PREFIX_MAPPING):
        monkeypatch.setitem(mapping, peft_type, None)  # the key is removed again after the test
    spec = MethodSpec(ToyConfig, ToyModel, family="clip", title="Toy (CoOp under another name)",
                      summary="CoOp's context, registered from a test.", citation="@misc{toy2026,\n  title={Toy}\n}")  # fmt: skip
    register_method(spec)
    return spec


def test_every_method_is_registered_with_peft_under_its_config_name():
    assert list(registered_methods()) == [
        "ivpt", "vpt_deep", "coop", "cocoop", "kgcoop", "maple", "promptsrc", "intcoop", "ipl", "dualview_mi",
    ]  # fmt: skip
    for name, spec in registered_methods().items():
        peft_type = registry.peft_type_for(name)
        assert spec.name == name == spec.config_class.method_name
        assert PEFT_TYPE_TO_CONFIG_MAPPING[peft_type] is spec.config_class
        assert PEFT_TYPE_TO_TUNER_MAPPING[peft_type] is spec.model_class
    assert list(registered_methods("vision")) == ["ivpt", "vpt_deep"]
    assert method_spec("ivpt").default_backbone == "conceptworld-dinov2" and method_spec("ivpt").task == "image-classification"
    assert method_spec("ipl").default_backbone == "conceptworld-clip"
    assert method_spec("ipl").task == "zero-shot-image-classification"


def test_unknown_method_or_family_is_refused_by_name():
    with pytest.raises(ValueError, match=r"method 'lora' is not a peft-interp method \(ivpt, vpt_deep, coop"):
        method_spec("lora")
    with pytest.raises(ValueError, match=r"MethodSpec.family: expected one of \['vision', 'clip'\], got 'audio'"):
        MethodSpec(IVPTConfig, IVPTModel, family="audio", title="", summary="", citation="")


def test_method_config_gives_num_classes_only_to_configs_with_that_field():
    ivpt = method_config("ivpt", NAMES, {"image_size": 28})
    assert (ivpt.class_names, ivpt.num_classes, ivpt.image_size) == (NAMES, 3, 28)
    coop = method_config("coop", NAMES, {"num_context_tokens": 2})
    assert type(coop) is CoOpConfig and coop.class_names == NAMES and coop.num_context_tokens == 2
    assert "num_classes" not in CoOpConfig.__dataclass_fields__


def test_a_spec_can_build_its_config_its_own_way(monkeypatch):
    def sorted_classes(config_cls, class_names, settings):
        return config_cls(class_names=sorted(class_names), **settings)

    monkeypatch.setattr(registry, "_METHODS", dict(registry._METHODS))
    register_method(MethodSpec(CoOpConfig, CoOpModel, family="clip", title="", summary="", citation="",
                               config_from_classes=sorted_classes))  # fmt: skip
    assert method_config("coop", ["owl", "cat"], {}).class_names == ["cat", "owl"]


def test_a_registered_method_reaches_the_command_line_recipes_and_benchmark(toy, tmp_path):
    args = build_parser().parse_args(["train", "--method", "toy_coop"])
    assert args.method == "toy_coop" and _default_model("toy_coop") == "conceptworld-clip"
    assert _default_model("ivpt") == "conceptworld-dinov2"
    config = method_config("toy_coop", NAMES, {"num_context_tokens": 2})
    assert type(config) is ToyConfig and config.class_names == NAMES and config.num_context_tokens == 2
    assert isinstance(recipe_train_transform("toy_coop", 32), CoOpTrainTransform)
    assert isinstance(recipe_train_transform("ivpt", 32), IVPTTrainTransform)
    with pytest.raises(ValueError, match="the CLIP methods use the image tower's own input size 28"):
        check_image_size(make_clip(), 56, "toy_coop", 1, training=False)
    check_image_size(make_backbone("dinov2"), 56, "ivpt", 1, training=False)  # visual: any multiple of the patch
    bench = BenchmarkConfig(method="toy_coop", protocol="base_to_novel", datasets=["conceptworld"],
                            output_dir=str(tmp_path / "bench"))  # fmt: skip
    assert bench.model == "conceptworld-clip"
    (tmp_path / "lora").mkdir()
    (tmp_path / "lora" / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    with pytest.raises(ValueError, match=r"is not a peft-interp method \(.*dualview_mi, toy_coop\)"):
        check_adapter_folder(str(tmp_path / "lora"))


def test_a_registered_method_saves_loads_and_gets_its_model_card(toy, tmp_path, images):
    model = get_peft_model(make_clip(), ToyConfig(class_names=NAMES)).eval()
    folder = save_for_hub(model, tmp_path / "toy", repo_id="me/toy")
    card = ModelCard.load(folder / "README.md")
    assert card.data.pipeline_tag == "zero-shot-image-classification" and "toy_coop" in card.data.tags
    assert toy.title in card.text and toy.summary in card.text and toy.citation in card.text
    assert "CLIPModel" in card.text  # the usage snippet of a CLIP-family method
    reloaded = PeftModel.from_pretrained(make_clip(), folder).eval()
    assert type(reloaded.base_model) is ToyModel
    with torch.no_grad():
        assert torch.equal(reloaded(pixel_values=images).logits, model(pixel_values=images).logits)


def test_the_command_line_offers_every_registered_method():
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    method = next(action for action in train._actions if action.dest == "method")
    assert tuple(method.choices) == tuple(registered_methods())
