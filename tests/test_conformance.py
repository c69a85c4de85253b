"""Every method behaves like a PEFT method: one row per method in ``METHODS`` (tests/method_rows.py, shared with
tests/test_loading_routes.py), the same checks for all.

A new method adds one row (its base model, a small config, a base model it must refuse). The checks: save / load
round trip bit for bit, ``disable_adapter`` is the base model, ``add_adapter`` / ``set_adapter`` /
``delete_adapter`` / ``unload``, the base-model check on every loading route, ``save_for_hub`` with example pixels,
``AutoPeftModelForInterpretability``, and the stock ``transformers.Trainer`` (train, then ``evaluate()`` with loss
and accuracy), and ``explain`` returning the one :class:`~peft_interp.Explanation` contract.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from huggingface_hub import ModelCard
from peft import PeftConfig, PeftModel, get_peft_model
from safetensors.torch import load_file
from transformers import Trainer
from transformers import TrainingArguments as HFTrainingArguments

from peft_interp import AutoPeftModelForInterpretability, VPTDeepConfig
from peft_interp.data import load_clip_tokenizer
from peft_interp.pipeline import load_trained
from peft_interp.registry import registered_methods
from peft_interp.sharing import save_for_hub
from peft_interp.training import compute_metrics, logits_only
from peft_interp.tuners.explanation import Explanation, PromptExplanation
from peft_interp.tuners.layers import InterpLayer

from .method_rows import METHODS, NAMES, Method
from .tiny_models import IMAGE_SIZE


def test_every_registered_method_has_one_row():
    """A method registered with ``register_method`` is checked here only through its row in tests/method_rows.py."""
    names = [method.name for method in METHODS]
    assert len(names) == len(set(names)), "a method has two rows"
    assert sorted(names) == sorted(registered_methods()), "add the method's row to tests/method_rows.py"


@pytest.fixture(params=METHODS, ids=[method.name for method in METHODS])
def method(request) -> Method:
    return request.param


def perturbed(model, seed: int = 0):
    """Move every trainable adapter tensor away from its initialisation (weights != init, != each other)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.05 * torch.randn(param.shape, generator=generator))
    return model


def adapted(method: Method, base=None):
    return perturbed(get_peft_model(base if base is not None else method.make_base(), method.make_config())).eval()


def logits(model, images) -> torch.Tensor:
    with torch.no_grad():
        return model(pixel_values=images).logits


def adapter_tensors(model, adapter_name: str = "default") -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict

    return get_peft_model_state_dict(model, adapter_name=adapter_name)


# ------------------------------------------------------------------------------------------- save and load
def test_save_load_round_trip_is_bit_exact(method, tmp_path, images):
    model = adapted(method)
    expected = logits(model, images)
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "adapter_config.json").read_text())["base_model_signature"]
    saved = load_file(tmp_path / "adapter_model.safetensors")
    reloaded = PeftModel.from_pretrained(method.make_base(), tmp_path).eval()
    for name, tensor in adapter_tensors(reloaded).items():
        assert torch.equal(tensor, saved[name]), name
    assert torch.equal(logits(reloaded, images), expected)


# -------------------------------------------------------------------------------------------- disabled
def zero_shot_clip_logits(clip, images, template: str) -> torch.Tensor:
    """Zero-shot CLIP computed independently: one prompt per class, tokenised alone, CLIP's own feature functions."""
    tokenizer = load_clip_tokenizer()
    with torch.no_grad():
        text = torch.cat([
            clip.get_text_features(input_ids=torch.tensor([tokenizer.encode(template.format(name))])).pooler_output
            for name in NAMES
        ])  # fmt: skip
        image = clip.get_image_features(pixel_values=images).pooler_output
    return clip.logit_scale.exp() * F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).T


# ------------------------------------------------------------------------------------------------- explanations
def test_explain_keeps_the_one_explanation_contract(method, images):
    """``model.explain(pixel_values)`` of every method: an ``Explanation`` whose fields are what reports and cards
    read, consistent with the forward pass (same logits) and with each other (shapes, names, additive shares)."""
    model = adapted(method)
    explanation = model.explain(images)
    assert isinstance(explanation, Explanation), type(explanation)
    batch = len(images)
    torch.testing.assert_close(explanation.logits, logits(model, images), rtol=0, atol=0)
    assert torch.equal(explanation.predictions, explanation.logits.argmax(dim=-1))
    torch.testing.assert_close(model.explain(pixel_values=images).logits, explanation.logits, rtol=0, atol=0)
    if explanation.maps is not None:
        assert explanation.maps.shape[:2] == (batch, len(explanation.map_names)) and explanation.maps.min() >= 0
        assert all(isinstance(name, str) and name for name in explanation.map_names)
    if explanation.background is not None:
        assert explanation.background.shape == (batch, *explanation.maps.shape[2:])
    if explanation.contributions is not None:  # additive shares of the predicted class's logit
        assert explanation.contributions.shape == (batch, len(explanation.map_names))
        picked = explanation.logits.gather(1, explanation.predictions[:, None])[:, 0]
        torch.testing.assert_close(explanation.contributions.sum(dim=-1), picked)
        by_class = explanation.class_contributions.gather(1, explanation.predictions[:, None, None].expand(
            -1, 1, explanation.contributions.shape[1]))[:, 0]  # fmt: skip
        assert torch.equal(by_class, explanation.contributions)
    if method.is_clip:  # the learnt prompt read as words, as text lines for pages and cards
        assert isinstance(explanation.prompt, PromptExplanation)
        lines = explanation.prompt.lines()
        assert lines and all(isinstance(line, str) and line for line in lines)
    else:
        assert explanation.prompt is None and explanation.maps is not None
    if explanation.image_notes is not None:
        assert len(explanation.image_notes) == batch
        assert all(isinstance(line, str) for notes in explanation.image_notes for line in notes)


def test_disable_adapter_is_the_base_model(method, images):
    model = adapted(method)
    with model.disable_adapter(), torch.no_grad():
        disabled = model(pixel_values=images)
    base = method.make_base()
    if method.is_clip:  # the base of a CLIP prompt method is zero-shot CLIP with the config's template
        expected = zero_shot_clip_logits(base, images, model.peft_config["default"].template)
        torch.testing.assert_close(disabled.logits, expected, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(logits(model, images), expected, rtol=1e-5, atol=1e-5)  # the adapter is in use
    else:  # the base of a visual prompt method is the backbone, whose forward gives hidden states
        with torch.no_grad():
            expected = base(pixel_values=images)
        assert torch.equal(disabled.last_hidden_state, expected.last_hidden_state)
        assert torch.equal(disabled.pooler_output, expected.pooler_output)


# -------------------------------------------------------------------------------------- several adapters
def test_add_set_delete_adapter_and_unload(method, images):
    model = adapted(method)
    first = logits(model, images)
    model.add_adapter("second", method.make_config())
    assert torch.equal(logits(model, images), first)  # adding does not activate
    model.set_adapter("second")
    perturbed(model, seed=1)
    trainable = [name for name, param in model.named_parameters() if param.requires_grad]
    assert trainable and all(".second" in name for name in trainable)
    second = logits(model, images)
    assert not torch.allclose(second, first)

    model.set_adapter("default")
    assert torch.equal(logits(model, images), first)
    model.delete_adapter("second")
    assert not any(".second" in name for name, _ in model.named_parameters())
    assert list(model.peft_config) == ["default"]
    assert torch.equal(logits(model, images), first)

    unloaded = model.unload()
    assert not any(isinstance(module, InterpLayer) for module in unloaded.modules())
    base = method.make_base()
    for name, tensor in base.state_dict().items():
        assert torch.equal(unloaded.state_dict()[name], tensor), name


# ------------------------------------------------------------------------------------------- base model
def test_every_loading_route_refuses_another_base_model(method, tmp_path):
    adapted(method).save_pretrained(tmp_path)
    saved_config = PeftConfig.from_pretrained(tmp_path)
    message = "made for a different base model"
    with pytest.raises(ValueError, match=message):  # PeftModel.from_pretrained
        PeftModel.from_pretrained(method.make_other_base(), tmp_path)
    with pytest.raises(ValueError, match=message):  # get_peft_model with the saved config
        get_peft_model(method.make_other_base(), PeftConfig.from_pretrained(tmp_path))
    other = get_peft_model(method.make_other_base(), method.make_config())
    with pytest.raises(ValueError, match=message):  # load_adapter
        other.load_adapter(tmp_path, adapter_name="loaded")
    with pytest.raises(ValueError, match=message):  # add_adapter
        other.add_adapter("added", saved_config)
    assert list(other.peft_config) == ["default"]  # nothing half-added
    assert not any(".loaded" in name or ".added" in name for name in other.state_dict())


# ----------------------------------------------------------------------------------------------- sharing
def test_save_for_hub_with_example_pixels(method, tmp_path, images):
    model = adapted(method)
    folder = save_for_hub(model, tmp_path / method.name, repo_id=f"me/{method.name}", example_pixels=images[:2],
                          metrics={"accuracy": 0.5})  # fmt: skip
    explanation = json.loads((folder / "explanation.json").read_text())
    assert explanation["method"] == method.name and explanation["metrics"] == {"accuracy": 0.5}
    assert all((folder / example).is_file() for example in explanation.get("examples", []))
    card = ModelCard.load(folder / "README.md")
    assert card.data.library_name == "peft" and method.name in card.data.tags
    reloaded = PeftModel.from_pretrained(method.make_base(), folder).eval()
    assert torch.equal(logits(reloaded, images), logits(model, images))


def test_auto_peft_model_loads_the_base_model_it_names(method, tmp_path, images):
    method.make_base().save_pretrained(tmp_path / "base")
    base = type(method.make_base()).from_pretrained(tmp_path / "base").eval()
    model = adapted(method, base)
    model.save_pretrained(tmp_path / "adapter")
    loaded = AutoPeftModelForInterpretability.from_pretrained(tmp_path / "adapter").eval()
    assert type(loaded.base_model) is type(model.base_model)
    assert torch.equal(logits(loaded, images), logits(model, images))


# ------------------------------------------------------------------------------------ transformers.Trainer
class ImageRows(torch.utils.data.Dataset):
    def __init__(self, seed: int, size: int = 8) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.pixels = torch.randn(size, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
        self.labels = torch.arange(size) % len(NAMES)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        return {"pixel_values": self.pixels[index], "labels": self.labels[index]}


def train_and_evaluate(method: Method, output_dir, **trainer_kwargs) -> tuple[PeftModel, ImageRows, dict]:
    """Two training steps and ``evaluate()`` with the stock Trainer, default arguments but the run's size."""
    model = get_peft_model(method.make_base(), method.make_config())
    before = {name: param.detach().clone() for name, param in model.named_parameters() if param.requires_grad}
    args = HFTrainingArguments(
        output_dir, max_steps=2, per_device_train_batch_size=4, per_device_eval_batch_size=3, learning_rate=0.01,
        report_to="none", save_strategy="no", use_cpu=True, disable_tqdm=True,
    )  # fmt: skip
    test = ImageRows(seed=2, size=7)
    trainer = Trainer(model, args, train_dataset=ImageRows(seed=1), eval_dataset=test, compute_metrics=compute_metrics,
                      **trainer_kwargs)  # fmt: skip
    trainer.train()
    assert any(not torch.equal(param, before[name]) for name, param in model.named_parameters() if name in before)
    return model, test, trainer.evaluate()


def test_transformers_trainer_trains_and_evaluates_with_its_defaults(method, tmp_path):
    model, test, metrics = train_and_evaluate(method, tmp_path)
    model.eval()
    with torch.no_grad():
        output = model(pixel_values=test.pixels)
    expected_accuracy = (output.logits.argmax(dim=-1) == test.labels).float().mean().item()
    assert metrics["eval_accuracy"] == pytest.approx(expected_accuracy)
    # the Trainer's loss is the size-weighted mean of its batches' losses (3 + 3 + 1 images)
    expected_loss, again = (eval_loss(model, test, batch_size=3) for _ in range(2))
    if expected_loss == again:
        assert metrics["eval_loss"] == pytest.approx(expected_loss, rel=1e-5)
    else:  # a loss with random terms (DualViewMI's mixup weights)
        assert math.isfinite(metrics["eval_loss"])


def test_trainer_evaluation_can_keep_only_the_logits(tmp_path):
    torch.manual_seed(0)
    _, _, everything = train_and_evaluate(METHODS[0], tmp_path / "all")
    torch.manual_seed(0)
    _, _, logits_kept = train_and_evaluate(METHODS[0], tmp_path / "logits", preprocess_logits_for_metrics=logits_only)
    assert logits_kept["eval_accuracy"] == everything["eval_accuracy"]
    assert logits_kept["eval_loss"] == everything["eval_loss"]


def eval_loss(model, rows: ImageRows, batch_size: int) -> float:
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            pixels, labels = rows.pixels[start : start + batch_size], rows.labels[start : start + batch_size]
            total += len(labels) * model(pixel_values=pixels, labels=labels).loss.item()
    return total / len(rows)


# ------------------------------------------------------------------------------------------ portable names
def test_adapters_on_shipped_backbones_name_them_portably(tmp_path):
    from peft_interp.shipped import CHECKPOINTS_DIR, load_default
    from peft_interp.sharing import usage_snippet

    model = perturbed(get_peft_model(load_default("dinov2"), VPTDeepConfig(num_classes=3, num_prompt_tokens=2)))
    folder = save_for_hub(model.eval(), tmp_path / "vpt")
    recorded = json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert recorded == "peft-interp/conceptworld-dinov2"
    for name in ("README.md", "adapter_config.json", "explanation.json"):
        assert str(CHECKPOINTS_DIR) not in (folder / name).read_text(), name
    assert ModelCard.load(folder / "README.md").data.base_model is None  # not a Hub id

    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    expected = logits(model, images)
    assert torch.equal(logits(AutoPeftModelForInterpretability.from_pretrained(folder).eval(), images), expected)
    loaded, base_name = load_trained(str(folder), None)  # the command line's evaluate / explain
    assert base_name == recorded and torch.equal(logits(loaded, images), expected)
    namespace = {}
    exec(usage_snippet(model.peft_config["default"], str(folder)), namespace)  # the card's snippet, offline
    assert torch.equal(logits(namespace["model"], images), expected)
