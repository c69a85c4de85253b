"""Details of sharing that a user sees: rounded metrics, long class lists on the card, example pictures scaled per
image, Hub calls with the caller's settings, a missing explanation, files looked up locally before the Hub."""

from __future__ import annotations

import json
from unittest import mock

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from peft import get_peft_model

from peft_interp import CoOpConfig, IVPTConfig
from peft_interp.sharing import (
    _min_max_pictures,
    _explanation_markdown,
    _local_or_hub_file,
    load_adapter,
    load_explanation,
    push_adapter,
    render_model_card,
    save_for_hub,
    usage_snippet,
)

from .tiny_models import make_backbone, make_clip

MANY = [f"class{i}" for i in range(12)]


def test_metrics_are_rounded_to_six_significant_digits(tmp_path):
    model = get_peft_model(make_backbone("dinov2"), IVPTConfig(num_classes=3))
    folder = save_for_hub(model, tmp_path / "a", metrics={"accuracy": 0.123456789, "hm": 12.3456789})
    assert json.loads((folder / "explanation.json").read_text())["metrics"] == {"accuracy": 0.123457, "hm": 12.3457}
    card = ModelCard.load(folder / "README.md")
    assert card.data.metrics == ["accuracy", "hm"]
    assert "- **accuracy**: 0.1235" in card.text and "- **hm**: 12.35" in card.text


def test_explanation_markdown_lists_ten_classes_then_the_count():
    text = _explanation_markdown({"class_names": MANY, "readable_prompt": "a red {}.", "concepts": ["wing", "beak"]})
    assert "Classes: class0, class1, class2, class3, class4, class5, class6, class7, class8, class9, ... (12 in all)." in text
    assert "Readable prompt: **a red {}.**" in text and "Concepts (2): wing, beak." in text
    assert "... (" not in _explanation_markdown({"class_names": MANY[:10]})
    assert _explanation_markdown({}) == "See `explanation.json`."


def test_min_max_pictures_scale_each_image_to_the_full_byte_range():
    pixels = torch.stack([torch.full((3, 2, 2), -1.0), torch.zeros(3, 2, 2)])
    pixels[0, 0, 0, 0], pixels[1, 2, 1, 1] = 3.0, 0.5  # image 0 spans [-1, 3], image 1 [0, 0.5]
    shown = _min_max_pictures(pixels)
    assert shown.shape == (2, 2, 2, 3) and shown.dtype == np.uint8
    assert shown[0, 0, 0, 0] == 255 and shown[0, 1, 1, 2] == 0
    assert shown[1, 1, 1, 2] == 255 and shown[1, 0, 0, 0] == 0
    flat = _min_max_pictures(torch.zeros(1, 3, 2, 2))  # constant image: no division by zero
    assert (flat == 0).all()


def test_push_passes_privacy_token_and_commit_message_through(tmp_path):
    model = get_peft_model(make_backbone("dinov2"), IVPTConfig(num_classes=3))
    with mock.patch("peft_interp.sharing.HfApi") as api_cls:
        push_adapter(model, "me/x", token="t0k", private=True)
        push_adapter(model, "me/y", commit_message="first version")
    first, second = api_cls.return_value.upload_folder.call_args_list
    api_cls.return_value.create_repo.assert_any_call("me/x", private=True, exist_ok=True, repo_type="model")
    assert api_cls.call_args_list[0] == mock.call(token="t0k")
    assert first.kwargs["commit_message"] == "Upload PEFT_INTERP_IVPT adapter"
    assert second.kwargs["commit_message"] == "first version" and second.kwargs["repo_id"] == "me/y"


def test_local_files_first_then_the_hub(tmp_path):
    (tmp_path / "explanation.json").write_text("{}")
    assert _local_or_hub_file(tmp_path, "explanation.json") == tmp_path / "explanation.json"
    with pytest.raises(FileNotFoundError, match="README.md not found in"):
        _local_or_hub_file(tmp_path, "README.md")  # a local folder never falls back to the Hub
    with mock.patch("peft_interp.sharing.hf_hub_download", return_value=str(tmp_path / "x")) as download:
        assert _local_or_hub_file("me/repo", "explanation.json", revision="v1") == tmp_path / "x"
    download.assert_called_once_with("me/repo", "explanation.json", revision="v1")


def test_an_adapter_without_explanation_loads_with_none(tmp_path, images):
    model = get_peft_model(make_backbone("dinov2"), IVPTConfig(num_classes=3)).eval()
    model.save_pretrained(tmp_path)  # PEFT's own save: no explanation.json
    loaded = load_adapter(make_backbone("dinov2"), tmp_path).eval()
    assert loaded.explanation is None
    assert torch.equal(loaded(pixel_values=images).logits, model(pixel_values=images).logits)
    with pytest.raises(FileNotFoundError):
        load_explanation(tmp_path)


def test_clip_adapters_get_a_clip_card_and_snippet(tmp_path):
    model = get_peft_model(make_clip(), CoOpConfig(class_names=MANY))
    config = model.peft_config["default"]
    config.base_model_name_or_path = "openai/clip-vit-base-patch16"
    explanation = model.base_model.explanation_metadata()
    card = render_model_card(config, explanation, "me/coop", None, "mit")
    assert card.data.pipeline_tag == "zero-shot-image-classification" and card.data.license == "mit"
    assert card.data.base_model == "openai/clip-vit-base-patch16" and card.data.datasets is None
    assert "coop" in card.data.tags and "(12 in all)" in card.text
    snippet = usage_snippet(config, "me/coop")
    assert 'CLIPModel.from_pretrained("openai/clip-vit-base-patch16")' in snippet
    assert 'load_adapter(base, "me/coop")' in snippet
    ivpt_config = IVPTConfig(num_classes=3)
    assert "from transformers import AutoModel" in usage_snippet(ivpt_config, "me/ivpt")
    assert 'AutoModel.from_pretrained("<base model>")' in usage_snippet(ivpt_config, "me/ivpt")


def test_a_nearly_constant_example_image_is_not_stretched_to_full_contrast():
    pixels = torch.zeros(1, 3, 2, 2)
    pixels[0, 0, 0, 0] = 1e-10  # below the 1e-8 floor of the range: noise, not content
    assert _min_max_pictures(pixels).max() <= 3


def test_the_card_names_a_local_base_model_folder(tmp_path):
    model = get_peft_model(make_backbone("dinov2"), IVPTConfig(num_classes=3))
    model.peft_config["default"].base_model_name_or_path = str(tmp_path)  # an existing folder: not a Hub id
    card = render_model_card(model.peft_config["default"], model.base_model.explanation_metadata(), "me/x", None,
                             "apache-2.0")  # fmt: skip
    assert "a custom base model" not in card.text and tmp_path.name.split("_")[-1] in card.text  # (escaped path)
    assert card.data.base_model is None
    model.peft_config["default"].base_model_name_or_path = None
    card = render_model_card(model.peft_config["default"], model.base_model.explanation_metadata(), "me/x", None,
                             "apache-2.0")  # fmt: skip
    assert "a custom base model" in card.text
