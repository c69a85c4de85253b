"""Sharing adapters: explanation.json, model cards, mocked Hub upload, loading back, bad inputs."""

import json
from unittest import mock

import pytest
import torch
from huggingface_hub import ModelCard
from peft import PeftModel, get_peft_model
from transformers import Dinov2Model

from peft_interp import CoOpConfig, IPLConfig, IVPTConfig
from peft_interp.sharing import load_adapter, load_explanation, save_for_hub, usage_snippet

from .tiny_models import make_backbone, make_clip

NAMES = ["sparrow", "crow", "finch"]


def ivpt_model(tmp_path):
    """An IVPT model on a base loaded from a folder (so the adapter records where its base is)."""
    base_dir = tmp_path / "base"
    make_backbone("dinov2").save_pretrained(base_dir)
    base = Dinov2Model.from_pretrained(base_dir)
    return get_peft_model(base, IVPTConfig(num_classes=3, class_names=NAMES)).eval(), base_dir


def test_save_for_hub_writes_adapter_explanation_pictures_and_card(tmp_path, images):
    model, _ = ivpt_model(tmp_path)
    out = save_for_hub(model, tmp_path / "ivpt", repo_id="me/ivpt-birds", metrics={"accuracy": 87.5},
                       dataset="conceptworld", example_pixels=images[:2])  # fmt: skip
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == ["README.md", "adapter_config.json", "adapter_model.safetensors", "examples/image_0.png",
                     "examples/image_1.png", "explanation.json"]  # fmt: skip

    explanation = json.loads((out / "explanation.json").read_text())
    assert explanation["method"] == "ivpt" and explanation["class_names"] == NAMES
    assert explanation["concepts"] == ["concept 0", "concept 1", "concept 2", "concept 3"]
    assert explanation["metrics"] == {"accuracy": 87.5}

    card = ModelCard.load(out / "README.md")  # parsed and checked by huggingface_hub's own card classes
    assert card.data.library_name == "peft"
    assert card.data.base_model is None and str(tmp_path / "base") in card.text  # a local folder is no Hub id
    assert {"peft", "peft-interp", "ivpt"} <= set(card.data.tags) and card.data.license == "apache-2.0"
    assert card.data.datasets == ["conceptworld"]
    [result] = card.data.eval_results
    assert (result.metric_type, result.metric_value, result.task_type) == ("accuracy", 87.5, "image-classification")
    assert "model-index" in card.content and "@inproceedings{wang2026ivpt" in card.text
    assert "![example explanation](examples/image_0.png)" in card.text
    assert "![example explanation](examples/image_1.png)" in card.text


def test_hub_base_model_goes_into_the_metadata(tmp_path):
    model, _ = ivpt_model(tmp_path)
    model.peft_config["default"].base_model_name_or_path = "facebook/dinov2-with-registers-base"
    card = ModelCard.load(save_for_hub(model, tmp_path / "hub") / "README.md")
    assert card.data.base_model == "facebook/dinov2-with-registers-base"
    assert "base_model:adapter:facebook/dinov2-with-registers-base" in card.data.tags


def test_usage_snippet_in_the_card_runs(tmp_path, images):
    model, _ = ivpt_model(tmp_path)
    folder = save_for_hub(model, tmp_path / "adapter")
    snippet = usage_snippet(model.peft_config["default"], str(folder))
    namespace = {}
    exec(snippet, namespace)  # loads the base from its folder and the adapter from ours, offline
    loaded = namespace["model"]
    assert torch.equal(loaded(pixel_values=images).logits, model(pixel_values=images).logits)
    assert namespace["explanation"]["class_names"] == NAMES


def test_push_uploads_the_folder_through_the_hub_client(tmp_path):
    model, _ = ivpt_model(tmp_path)
    uploaded = {}

    def fake_upload(**kwargs):
        folder = kwargs["folder_path"]
        uploaded["files"] = sorted(p.name for p in __import__("pathlib").Path(folder).iterdir())
        uploaded["card"] = ModelCard.load(f"{folder}/README.md")
        uploaded["repo_id"] = kwargs["repo_id"]

    with mock.patch("peft_interp.sharing.HfApi") as api_cls:
        api_cls.return_value.upload_folder.side_effect = fake_upload
        model.push_to_hub("me/ivpt-birds", metrics={"accuracy": 0.5}, token="secret")
    api_cls.assert_called_once_with(token="secret")
    api_cls.return_value.create_repo.assert_called_once_with("me/ivpt-birds", private=False, exist_ok=True, repo_type="model")
    assert uploaded["repo_id"] == "me/ivpt-birds"
    assert uploaded["files"] == ["README.md", "adapter_config.json", "adapter_model.safetensors", "explanation.json"]
    assert uploaded["card"].data.model_name == "me/ivpt-birds"


def test_load_adapter_round_trip_and_explanation_without_weights(tmp_path, images):
    model, base_dir = ivpt_model(tmp_path)
    folder = save_for_hub(model, tmp_path / "adapter", metrics={"accuracy": 1.0})
    loaded = load_adapter(make_backbone("dinov2"), folder).eval()
    assert torch.equal(loaded(pixel_values=images).logits, model(pixel_values=images).logits)
    assert loaded.explanation["metrics"] == {"accuracy": 1.0}
    (folder / "adapter_model.safetensors").unlink()
    assert load_explanation(folder)["class_names"] == NAMES  # no weights needed


def test_clip_adapters_share_their_readable_prompt(tmp_path):
    coop = get_peft_model(make_clip(), CoOpConfig(class_names=NAMES))
    explanation = json.loads((save_for_hub(coop, tmp_path / "coop") / "explanation.json").read_text())
    assert explanation["readable_prompt"] == " ".join(explanation["context_tokens"]) + " {}."
    assert explanation["template"] == "a photo of a {}."
    ipl = get_peft_model(make_clip(), IPLConfig(class_names=NAMES, variant="coverage_anchor"))
    ipl.base_model.select_tokens()
    folder = save_for_hub(ipl, tmp_path / "ipl")
    card = ModelCard.load(folder / "README.md")
    prompt = ipl.explain_prompt().prompt
    assert load_explanation(folder)["readable_prompt"] == prompt and prompt in card.text
    assert card.data.pipeline_tag == "zero-shot-image-classification"
    assert "CLIPModel.from_pretrained" in card.text


def test_mismatched_base_model_fails_naming_both_before_loading(tmp_path):
    model, _ = ivpt_model(tmp_path)
    model.save_pretrained(tmp_path / "adapter")
    wider = make_backbone("dinov2_registers")
    with mock.patch("peft.peft_model.PeftModel.load_adapter") as load_weights:
        with pytest.raises(ValueError, match=r"model_type: adapter 'dinov2' vs model 'dinov2_with_registers'"):
            PeftModel.from_pretrained(wider, tmp_path / "adapter")
    load_weights.assert_not_called()


def test_corrupted_or_truncated_weights_give_a_clear_error(tmp_path):
    model, _ = ivpt_model(tmp_path)
    folder = tmp_path / "adapter"
    model.save_pretrained(folder)
    weights = folder / "adapter_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        load_adapter(make_backbone("dinov2"), folder)
    weights.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        load_adapter(make_backbone("dinov2"), folder)


def test_example_pictures_for_a_clip_method_follow_the_explanation_contract(tmp_path, images):
    from peft_interp import IntCoOpConfig

    model = get_peft_model(make_clip(), IntCoOpConfig(class_names=NAMES, visual_prompt_depth=2)).eval()
    out = save_for_hub(model, tmp_path / "intcoop", example_pixels=images[:2])
    assert sorted(p.name for p in (out / "examples").iterdir()) == ["image_0.png", "image_1.png"]
    assert json.loads((out / "explanation.json").read_text())["examples"] == ["examples/image_0.png",
                                                                              "examples/image_1.png"]  # fmt: skip
