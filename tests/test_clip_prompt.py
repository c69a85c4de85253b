"""The shared CLIP text-prompt core and CoOp: truncation parity, caching, PEFT behaviour."""

from functools import partial
from unittest import mock

import pytest
import torch
import torch.nn.functional as F
from peft import PeftModel, get_peft_model

from peft_interp import CoOpConfig, DualViewMIConfig, IPLConfig
from peft_interp.data import load_clip_tokenizer
from peft_interp.tuners.clip_prompt.model import TOKEN_EMBEDDING

from .tiny_models import make_backbone, make_clip

CLASSES = ["red-headed blue-bodied bird", "cat", "small dog with long ears"]


def coop(**overrides):
    return get_peft_model(make_clip(), CoOpConfig(class_names=CLASSES, **overrides))


def reference_text_features(clip, context, class_names, length=77):
    """CoOp written out by hand on full 77-token prompts: [SOS] ctx name. [EOS] pad..., causal encoder, EOS pooling."""
    tokenizer = load_clip_tokenizer()
    text = clip.text_model
    token_embedding = clip.get_submodule(TOKEN_EMBEDDING).get_base_layer()
    features = []
    for row, name in enumerate(class_names):
        name_ids = tokenizer.encode(f"{name}.", add_special_tokens=False)
        ids = [tokenizer.bos_token_id] + [0] * context.shape[-2] + name_ids + [tokenizer.eos_token_id]
        eos = len(ids) - 1
        ids = torch.tensor(ids + [tokenizer.eos_token_id] * (length - len(ids)))
        embeds = token_embedding(ids[None]).clone()
        embeds[0, 1 : 1 + context.shape[-2]] = context if context.ndim == 2 else context[row]
        hidden = embeds + text.embeddings.position_embedding(torch.arange(length))[None]
        hidden = text.encoder(inputs_embeds=hidden, is_causal=True).last_hidden_state
        pooled = text.final_layer_norm(hidden)[0, eos]
        features.append(F.normalize(clip.text_projection(pooled), dim=-1))
    return torch.stack(features)


@pytest.mark.parametrize(
    "config_cls, class_specific",
    [(CoOpConfig, False), (CoOpConfig, True), pytest.param(partial(IPLConfig, variant="coverage_anchor"), False,
     id="IPL-coverage_anchor"), (DualViewMIConfig, False)],  # IPL's hybrid layout: tests/test_ipl_hybrid.py
)
def test_truncated_prompts_match_full_77_token_reference(images, config_cls, class_specific):
    """Every method on the core: logits of EOS-truncated prompts equal those of full 77-token prompts."""
    config = config_cls(class_names=CLASSES, class_specific_context=class_specific)
    model = get_peft_model(make_clip(), config)
    context = model.base_model.context_layer.context["default"]
    with torch.no_grad():
        context.normal_()  # a trained-looking context, not the word embeddings
    assert model.base_model.prompts("default").input_ids.shape[1] < 20  # truncated, not 77
    clip = model.base_model.model
    with torch.no_grad():
        out = model(pixel_values=images)
        text = reference_text_features(clip, context, CLASSES)
        image = F.normalize(clip.get_image_features(pixel_values=images).pooler_output, dim=-1)
    expected = clip.logit_scale.exp() * image @ text.T
    torch.testing.assert_close(out.text_embeds, text, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.logits, expected, rtol=1e-5, atol=1e-5)


def test_only_the_context_trains(images, labels):
    model = coop()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert list(trainable) == ["base_model.model.text_model.embeddings.token_embedding.context.default"]
    assert model.get_nb_trainable_parameters()[0] == 4 * 32
    model(pixel_values=images, labels=labels).loss.backward()
    assert all(p.grad is None for n, p in model.named_parameters() if n not in trainable)
    assert trainable[next(iter(trainable))].grad.abs().sum() > 0


def test_context_init_decodes_to_its_words():
    assert coop().decode_context().prompt == "a photo of a {}."
    with pytest.raises(ValueError, match="`context_init`='a photo of' is 3 tokens but `num_context_tokens` is 4"):
        coop(context_init="a photo of")


def test_disable_adapter_is_zero_shot_clip_with_the_template(images):
    model = coop(template="a blurry photo of a {}.")
    with torch.no_grad():
        context = model.base_model.context_layer.context["default"]
        context.normal_()
        clip = make_clip()
        tokenizer = load_clip_tokenizer()
        prompts = tokenizer([f"a blurry photo of a {c}." for c in CLASSES], padding="max_length", return_tensors="pt")
        text = F.normalize(clip.get_text_features(input_ids=prompts.input_ids).pooler_output, dim=-1)
        image = F.normalize(clip.get_image_features(pixel_values=images).pooler_output, dim=-1)
        expected = clip.logit_scale.exp() * image @ text.T
        with model.disable_adapter():
            zero_shot = model(pixel_values=images).logits
        adapted = model(pixel_values=images).logits
    torch.testing.assert_close(zero_shot, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(adapted, expected)


def test_save_and_reload_exact(tmp_path, images, labels):
    model = coop()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    for _ in range(3):
        optimizer.zero_grad()
        model(pixel_values=images, labels=labels).loss.backward()
        optimizer.step()
    model.set_class_names(["owl", "fox"])
    expected = model(pixel_values=images).logits
    model.save_pretrained(tmp_path)
    reloaded = PeftModel.from_pretrained(make_clip(), tmp_path)
    assert reloaded.peft_config["default"].class_names == ["owl", "fox"]
    assert torch.equal(reloaded(pixel_values=images).logits, expected)


def test_set_class_names_is_one_call_and_matches_a_model_built_for_them(images):
    model = coop()
    with torch.no_grad():
        model.base_model.context_layer.context["default"].normal_()
    novel = ["owl", "green fox", "tiny mouse", "whale"]
    model.set_class_names(novel)
    fresh = get_peft_model(make_clip(), CoOpConfig(class_names=novel))
    with torch.no_grad():
        fresh.base_model.context_layer.context["default"].copy_(model.base_model.context_layer.context["default"])
    assert torch.equal(model(pixel_values=images).logits, fresh(pixel_values=images).logits)
    assert model(pixel_values=images).logits.shape == (4, 4)

    csc = coop(class_specific_context=True)
    with pytest.raises(ValueError, match="class_specific_context"):
        csc.set_class_names(novel)


def test_text_features_once_per_forward_and_image_cache(images):
    model = coop(cache_image_features=True)
    clip = model.base_model.model
    with mock.patch.object(clip, "get_text_features", wraps=clip.get_text_features) as text_calls, mock.patch.object(
        clip, "get_image_features", wraps=clip.get_image_features
    ) as image_calls:
        first = model(pixel_values=images).logits
        second = model(pixel_values=images).logits
        third = model(pixel_values=torch.cat([images, images[:1] + 1])).logits
    assert text_calls.call_count == 3  # one text pass per forward for all classes, whatever the batch
    assert image_calls.call_count == 2  # first batch, then only the one new image
    assert image_calls.call_args_list[1].kwargs["pixel_values"].shape[0] == 1
    assert torch.equal(first, second) and torch.equal(third[:4], first)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="adapts a CLIPModel"):
        get_peft_model(make_backbone("dinov2"), CoOpConfig(class_names=CLASSES))
    with pytest.raises(ValueError, match="`class_names`"):
        CoOpConfig(class_names=[])
    with pytest.raises(ValueError, match="`template`"):
        CoOpConfig(class_names=CLASSES, template="a photo")
    with pytest.raises(ValueError, match="tokenizer of 49408 tokens but the model's text tower has 99"):
        get_peft_model(make_backbone("clip"), CoOpConfig(class_names=CLASSES))


UNDERSCORED = ["lawn_mower", "Apply_Eye_Makeup", "cat"]


@pytest.mark.parametrize("config_cls", [CoOpConfig, pytest.param(partial(IPLConfig, variant="coverage_anchor"),
                                                                   id="IPL-coverage_anchor"), DualViewMIConfig])
def test_underscores_in_class_names_are_read_as_spaces_like_reference_coop(images, config_cls):
    """Reference CoOp prompts `"X X X X " + name.replace("_", " ") + "."` and zero-shot CLIP
    `template.format(name.replace("_", " "))`: token ids and logits must match, for every method on the core."""
    tokenizer = load_clip_tokenizer()
    model = get_peft_model(make_clip(), config_cls(class_names=UNDERSCORED))
    context = model.base_model.context_layer.context["default"]
    with torch.no_grad():
        context.normal_()
    reference_ids = tokenizer([f"X X X X {name.replace('_', ' ')}." for name in UNDERSCORED], padding=True).input_ids
    ours = model.base_model.prompts("default")
    for row, ids in enumerate(reference_ids):
        length = int(ours.eos_positions[row]) + 1
        assert ours.input_ids[row, :length].tolist()[:1] + ours.input_ids[row, 5:length].tolist() == (
            ids[:1] + ids[5:length]
        )  # same tokens outside the 4 soft positions
    assert tokenizer.encode("lawn_mower.") != tokenizer.encode("lawn mower.")  # the clean-up changes the prompt
    clip = model.base_model.model
    with torch.no_grad():
        text = reference_text_features(clip, context, [name.replace("_", " ") for name in UNDERSCORED])
        image = F.normalize(clip.get_image_features(pixel_values=images).pooler_output, dim=-1)
        torch.testing.assert_close(model(pixel_values=images).logits, clip.logit_scale.exp() * image @ text.T,
                                   rtol=1e-5, atol=1e-5)  # fmt: skip
        prompts = tokenizer([f"a photo of a {n.replace('_', ' ')}." for n in UNDERSCORED], padding="max_length",
                            return_tensors="pt")  # fmt: skip
        zero_shot_text = F.normalize(clip.get_text_features(input_ids=prompts.input_ids).pooler_output, dim=-1)
        with model.disable_adapter():
            zero_shot = model(pixel_values=images).logits
    torch.testing.assert_close(zero_shot, clip.logit_scale.exp() * image @ zero_shot_text.T, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("config_name, overrides", [("CoCoOpConfig", {}), ("KgCoOpConfig", {}),
                                                     ("MaPLeConfig", {"prompt_depth": 2}),
                                                     ("PromptSRCConfig", {"text_prompt_depth": 2, "vision_prompt_depth": 2})])
def test_every_learner_prompts_underscored_names_with_spaces(config_name, overrides):
    import peft_interp

    tokenizer = load_clip_tokenizer()
    config = getattr(peft_interp, config_name)(class_names=UNDERSCORED, **overrides)
    prompts = get_peft_model(make_clip(), config).base_model.prompts("default")
    for row, name in enumerate(UNDERSCORED):
        ids = prompts.input_ids[row, : int(prompts.eos_positions[row])].tolist()
        spaced = tokenizer.encode(f"{name.replace('_', ' ')}.", add_special_tokens=False)
        assert ids[-len(spaced):] == spaced  # the class words end the prompt, '_' read as a space
        assert tokenizer.convert_tokens_to_ids("_</w>") not in ids and tokenizer.convert_tokens_to_ids("_") not in ids
