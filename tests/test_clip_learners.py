"""The prompt learners IPL plugs into (CoCoOp, KgCoOp, MaPLe, PromptSRC) against their papers' definitions, written
out by hand on tiny CLIP models, plus the PEFT behaviour every method must have (exact round trip, zero-shot CLIP
with the adapter disabled)."""

import math

import pytest
import torch
import torch.nn.functional as F
from peft import PeftModel, get_peft_model, get_peft_model_state_dict
from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING
from safetensors.torch import load_file
from transformers import CLIPConfig, CLIPModel

from peft_interp import (
    CoCoOpConfig,
    CoCoOpModel,
    CoOpConfig,
    KgCoOpConfig,
    KgCoOpModel,
    MaPLeConfig,
    MaPLeModel,
    PromptSRCConfig,
    PromptSRCModel,
)
from peft_interp.data import load_clip_tokenizer
from peft_interp.tuners.clip_prompt.model import TOKEN_EMBEDDING
from peft_interp.tuners.kgcoop.model import knowledge_distance
from peft_interp.tuners.maple.layer import CoupledPrompts
from peft_interp.tuners.promptsrc.config import IMAGENET_TEMPLATES
from peft_interp.tuners.promptsrc.layer import gaussian_weights

from .tiny_models import VIT, make_clip

CLASSES = ["red-headed blue-bodied bird", "cat", "small dog"]
TEMPLATES = ["a photo of a {}.", "a sketch of the {}.", "the {} in a video game."]


def make_wide_clip(seed: int = 0) -> CLIPModel:
    """A tiny CLIP whose vision width (48) differs from its text width (32), so a swapped map cannot pass."""
    torch.manual_seed(seed)
    text = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=49408)
    vision = {**VIT, "hidden_size": 48}
    return CLIPModel(CLIPConfig(vision_config=vision, text_config=text, projection_dim=16)).eval()


def randomise(model, std: float = 0.3) -> None:
    """Move every trainable tensor away from its initialisation (a trained-looking adapter)."""
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(torch.randn(param.shape, generator=generator) * std)


# ---------------------------------------------------------------------------------------- hand references
def prompt_ids(tokenizer, num_soft: int, text: str, length: int = 77) -> tuple[torch.Tensor, int]:
    """``[SOS] X * num_soft <text> [EOS] pad..`` (77 tokens) and the EOS position."""
    ids = [tokenizer.bos_token_id] + [0] * num_soft + tokenizer.encode(text, add_special_tokens=False)
    ids.append(tokenizer.eos_token_id)
    eos = len(ids) - 1
    return torch.tensor(ids + [tokenizer.eos_token_id] * (length - len(ids))), eos


def hand_text_features(clip, context, texts, deep=(), length: int = 77):
    """Text tower run block by block on 77-token prompts: ``context`` ``(n, D)`` at positions 1..n, then ``deep[j - 1]``
    in place of the hidden states there before block ``j``; causal mask built here; EOS pooling."""
    tokenizer = load_clip_tokenizer()
    text_model = clip.text_model
    embedding = clip.get_submodule(TOKEN_EMBEDDING)
    embedding = embedding.get_base_layer() if hasattr(embedding, "get_base_layer") else embedding
    causal = torch.full((length, length), float("-inf")).triu(1)[None, None]
    num = context.shape[0]
    features = []
    for text in texts:
        ids, eos = prompt_ids(tokenizer, num, text, length)
        hidden = embedding(ids[None]).clone()
        hidden[0, 1 : 1 + num] = context
        hidden = hidden + text_model.embeddings.position_embedding(torch.arange(length))[None]
        for depth, block in enumerate(text_model.encoder.layers):
            if 1 <= depth <= len(deep):
                hidden = hidden.clone()
                hidden[0, 1 : 1 + num] = deep[depth - 1]
            hidden = block(hidden, causal)
        pooled = text_model.final_layer_norm(hidden)[0, eos]
        features.append(F.normalize(clip.text_projection(pooled), dim=-1))
    return torch.stack(features)


def hand_image_features(clip, pixel_values, vision_prompts=None):
    """Vision tower run block by block: prompts ``(J, n_v, W)``: ``[0]`` appended before ``pre_layrnorm``, ``[j]``
    replacing the last ``n_v`` tokens before block ``j``; CLS pooling."""
    vision = clip.vision_model
    hidden = vision.embeddings(pixel_values)
    if vision_prompts is not None:
        hidden = torch.cat([hidden, vision_prompts[0].expand(len(hidden), -1, -1)], dim=1)
    hidden = vision.pre_layrnorm(hidden)
    for depth, block in enumerate(vision.encoder.layers):
        if vision_prompts is not None and 1 <= depth < len(vision_prompts):
            num = vision_prompts.shape[1]
            hidden = torch.cat([hidden[:, :-num], vision_prompts[depth].expand(len(hidden), -1, -1)], dim=1)
        hidden = block(hidden, None)
    return F.normalize(clip.visual_projection(vision.post_layernorm(hidden[:, 0])), dim=-1)


def zero_shot_logits(clip, images, class_names, template):
    tokenizer = load_clip_tokenizer()
    prompts = tokenizer([template.format(c) for c in class_names], padding="max_length", return_tensors="pt")
    text = F.normalize(clip.get_text_features(input_ids=prompts.input_ids).pooler_output, dim=-1)
    image = F.normalize(clip.get_image_features(pixel_values=images).pooler_output, dim=-1)
    return clip.logit_scale.exp() * image @ text.T


# ------------------------------------------------------------------------------------------------ CoCoOp
def cocoop(**overrides):
    model = get_peft_model(make_clip(), CoCoOpConfig(class_names=CLASSES, **overrides))
    randomise(model)
    return model


def test_cocoop_meta_net_is_the_papers_linear_relu_linear():
    model = get_peft_model(make_wide_clip(), CoCoOpConfig(class_names=CLASSES, meta_net_reduction=4))
    meta_net = model.base_model.cocoop_meta_net["default"]
    assert (meta_net.linear1.in_features, meta_net.linear1.out_features) == (16, 4)  # P -> P / 4
    assert (meta_net.linear2.in_features, meta_net.linear2.out_features) == (4, 32)  # -> D (text width)
    x = torch.randn(3, 16)
    by_hand = torch.clamp(x @ meta_net.linear1.weight.T + meta_net.linear1.bias, min=0)
    by_hand = by_hand @ meta_net.linear2.weight.T + meta_net.linear2.bias
    torch.testing.assert_close(meta_net(x), by_hand)
    assert CoCoOpConfig(class_names=CLASSES).meta_net_reduction == 16
    assert CoCoOpConfig(class_names=CLASSES).num_context_tokens == 4


@pytest.mark.parametrize("chunk", [None, 5])
def test_cocoop_batched_prompts_equal_a_per_image_loop(images, chunk):
    """All B x C prompts in one (or chunked) call give what the reference code's one-image-at-a-time loop gives:
    for image b, CoOp with the context shifted by pi(x_b), on full 77-token prompts."""
    model = cocoop(max_prompts_per_text_call=chunk)
    tuner = model.base_model
    clip = tuner.model
    with torch.no_grad():
        batched = model(pixel_values=images)
        image = F.normalize(clip.get_image_features(pixel_values=images).pooler_output, dim=-1)
        context = tuner.context_layer.context["default"]
        rows = []
        for b in range(len(images)):
            shifted = context + tuner.cocoop_meta_net["default"](image[b])  # (M, D): one bias for every vector
            text = hand_text_features(clip, shifted, [f"{name}." for name in CLASSES])
            rows.append(clip.logit_scale.exp() * image[b] @ text.T)
            single = model(pixel_values=images[b : b + 1]).logits[0]
            torch.testing.assert_close(single, batched.logits[b], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(batched.logits, torch.stack(rows), rtol=1e-5, atol=1e-5)
    assert batched.text_embeds.shape == (4, 3, 16)


def test_cocoop_trains_context_and_meta_net(images, labels):
    model = cocoop(meta_net_reduction=4)  # a hidden width of 4 (P = 16 here), not 1 that ReLU may silence
    model(pixel_values=images, labels=labels).loss.backward()
    trainable = {n.removeprefix("base_model."): p for n, p in model.named_parameters() if p.requires_grad}
    assert sorted(trainable) == [
        "cocoop_meta_net.default.linear1.bias", "cocoop_meta_net.default.linear1.weight",
        "cocoop_meta_net.default.linear2.bias", "cocoop_meta_net.default.linear2.weight",
        "model.text_model.embeddings.token_embedding.context.default",
    ]  # fmt: skip
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable.values())
    with pytest.raises(ValueError, match="`class_specific_context` must be False for CoCoOp"):
        CoCoOpConfig(class_names=CLASSES, class_specific_context=True)
    with pytest.raises(ValueError, match="`meta_net_reduction`=32 leaves no hidden unit"):
        get_peft_model(make_clip(), CoCoOpConfig(class_names=CLASSES, meta_net_reduction=32))


# ------------------------------------------------------------------------------------------------ KgCoOp
def test_kgcoop_distance_on_a_hand_computed_case():
    learnt = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    hand_crafted = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    # squared L2 per class: |(1,-1)|^2 = 2 and 0 -> mean 1; official 1 - mean cos = 1 - (0 + 1) / 2 = 0.5
    assert knowledge_distance(learnt, hand_crafted, "squared_l2").item() == 1.0
    assert knowledge_distance(learnt, hand_crafted, "cosine").item() == 0.5


@pytest.mark.parametrize("distance", ["squared_l2", "cosine"])
def test_kgcoop_loss_is_ce_plus_lambda_times_the_distance_to_hand_crafted_features(images, labels, distance):
    template = "a blurry photo of a {}."
    model = get_peft_model(make_clip(), KgCoOpConfig(class_names=CLASSES, template=template, knowledge_distance=distance))
    randomise(model)
    clip = model.base_model.model
    out = model(pixel_values=images, labels=labels)
    with torch.no_grad():
        context = model.base_model.context_layer.context["default"]
        learnt = hand_text_features(clip, context, [f"{name}." for name in CLASSES])
        tokenizer = load_clip_tokenizer()
        hand_ids = tokenizer([template.format(c) for c in CLASSES], padding="max_length", return_tensors="pt").input_ids
        hand_crafted = F.normalize(clip.get_text_features(input_ids=hand_ids).pooler_output, dim=-1)
        image = F.normalize(clip.get_image_features(pixel_values=images).pooler_output, dim=-1)
        logits = clip.logit_scale.exp() * image @ learnt.T
        ce = -torch.log_softmax(logits, dim=-1)[torch.arange(4), labels].mean()
        if distance == "squared_l2":  # (1 / C) sum_c ||w_c - w_c^clip||^2
            kg = sum(((learnt[c] - hand_crafted[c]) ** 2).sum() for c in range(3)) / 3
        else:  # 1 - (1 / C) sum_c cos(w_c, w_c^clip)
            kg = 1 - sum(learnt[c] @ hand_crafted[c] for c in range(3)) / 3
    assert kg > 1e-3  # the randomised context is away from the hand-crafted prompt
    torch.testing.assert_close(out.logits, logits, rtol=1e-5, atol=1e-5)  # CoOp's prompts, 77 tokens by hand
    torch.testing.assert_close(out.loss_terms["knowledge"], kg, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(out.loss, ce + 8.0 * kg, rtol=1e-4, atol=1e-5)
    out.loss.backward()
    assert model.base_model.context_layer.context["default"].grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------------- MaPLe
def maple(**overrides):
    config = MaPLeConfig(class_names=CLASSES, **{"prompt_depth": 2, **overrides})
    model = get_peft_model(make_wide_clip(), config)
    randomise(model)
    return model


def test_maple_coupling_function_maps_each_depths_text_prompts_to_vision_prompts():
    model = maple()
    tuner = model.base_model
    prompts = tuner.maple_prompts["default"]
    context = tuner.context_layer.context["default"]  # (n, D) = (2, 32)
    vision = tuner.vision_prompts("default")
    assert vision.shape == (2, 2, 48) and prompts.deep_text.shape == (1, 2, 32)
    for depth, text in enumerate([context, prompts.deep_text[0]]):
        layer = prompts.coupling[depth]
        torch.testing.assert_close(vision[depth], text @ layer.weight.T + layer.bias)  # F_j(T_j) = T_j A_j^T + b_j
    # the vision side has no parameter of its own: its loss trains the text prompts through the coupling
    image_loss = vision.sum()
    image_loss.backward()
    assert context.grad.abs().sum() > 0 and prompts.deep_text.grad.abs().sum() > 0
    # as in the official code, the deep coupling functions start as copies of one linear map
    coupling = CoupledPrompts(num_tokens=2, text_width=32, vision_width=48, depth=4).coupling
    assert torch.equal(coupling[1].weight, coupling[3].weight) and not torch.equal(coupling[0].weight, coupling[1].weight)


def test_maple_logits_equal_both_towers_prompted_by_hand(images):
    """Text: context at the input, deep prompts before block 1; vision: F_0(v) appended, F_1(T_1) before block 1."""
    model = maple()
    tuner = model.base_model
    clip = tuner.model
    with torch.no_grad():
        out = model(pixel_values=images)
        context = tuner.context_layer.context["default"]
        deep = tuner.maple_prompts["default"].deep_text
        vision = torch.stack([layer(t) for layer, t in zip(tuner.maple_prompts["default"].coupling, [context, deep[0]])])
        text = hand_text_features(clip, context, [f"of a {name}." for name in CLASSES], deep)
        image = hand_image_features(clip, images, vision)
    torch.testing.assert_close(out.text_embeds, text, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.image_embeds, image, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.logits, clip.logit_scale.exp() * image @ text.T, rtol=1e-4, atol=1e-4)


def test_maple_defaults_and_prompt_layout():
    config = MaPLeConfig(class_names=CLASSES)
    assert (config.prompt_depth, config.num_context_tokens, config.context_init) == (9, 2, "a photo of a")
    model = get_peft_model(make_wide_clip(), MaPLeConfig(class_names=["cat"], prompt_depth=1))
    tuner = model.base_model
    tokenizer = load_clip_tokenizer()
    prompts = tuner.prompts("default")
    expected = [tokenizer.bos_token_id, *tokenizer.encode("X X of a cat.", add_special_tokens=False), tokenizer.eos_token_id]
    assert prompts.input_ids[0].tolist() == expected and prompts.soft_mask[0].tolist()[:4] == [False, True, True, False]
    assert tuner.decode_context().prompt == "a photo of a {}."  # v starts at "a photo"; "of a" stays as fixed words
    assert tuner.deep_text_prompts("default").shape == (0, 2, 32)  # depth 1: input prompts only
    with pytest.raises(ValueError, match="`prompt_depth`=3 exceeds the 2 blocks of the CLIP text tower"):
        get_peft_model(make_wide_clip(), MaPLeConfig(class_names=CLASSES, prompt_depth=3))
    with pytest.raises(ValueError, match="`cache_image_features` must be False for MaPLe"):
        MaPLeConfig(class_names=CLASSES, cache_image_features=True)
    with pytest.raises(ValueError, match="prompts the image tower: pass `pixel_values`"):
        model(image_embeds=torch.randn(2, 16))


# --------------------------------------------------------------------------------------------- PromptSRC
def promptsrc(**overrides):
    config = PromptSRCConfig(class_names=CLASSES, **{"text_prompt_depth": 2, "vision_prompt_depth": 3,
                                                     "teacher_templates": TEMPLATES, **overrides})  # fmt: skip
    model = get_peft_model(make_wide_clip(), config)
    randomise(model)
    return model


def test_promptsrc_logits_equal_independent_prompts_by_hand(images):
    model = promptsrc().eval()
    tuner = model.base_model
    clip = tuner.model
    prompts = tuner.promptsrc_prompts["default"]
    assert prompts.deep_text.shape == (1, 4, 32) and prompts.vision.shape == (3, 4, 48)
    with torch.no_grad():
        out = model(pixel_values=images)
        context = tuner.context_layer.context["default"]
        text = hand_text_features(clip, context, [f"{name}." for name in CLASSES], prompts.deep_text)
        image = hand_image_features(clip, images, prompts.vision)
    torch.testing.assert_close(out.text_embeds, text, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.image_embeds, image, rtol=1e-5, atol=1e-5)


def test_promptsrc_loss_is_ce_plus_its_self_regularisation_written_out(images, labels):
    model = promptsrc().train()
    clip = model.base_model.model
    out = model(pixel_values=images, labels=labels)
    with torch.no_grad():
        frozen = make_wide_clip()
        frozen_image = F.normalize(frozen.get_image_features(pixel_values=images).pooler_output, dim=-1)
        tokenizer = load_clip_tokenizer()
        raw = []
        for template in TEMPLATES:  # mean of the unnormalised features over templates, then normalised
            ids = tokenizer([template.format(c) for c in CLASSES], padding="max_length", return_tensors="pt").input_ids
            raw.append(frozen.get_text_features(input_ids=ids).pooler_output)
        frozen_text = F.normalize(sum(raw) / len(raw), dim=-1)
        scale = clip.logit_scale.exp()
        frozen_logits = scale * frozen_image @ frozen_text.T
        image, text, logits = out.image_embeds, out.text_embeds, out.logits
        l1_image = (image - frozen_image).abs().sum() / image.numel()
        l1_text = (text - frozen_text).abs().sum() / text.numel()
        kl = 0.0
        for b in range(4):
            p, q = torch.softmax(logits[b], -1), torch.softmax(frozen_logits[b], -1)
            kl += sum(q[c] * (torch.log(q[c]) - torch.log(p[c])) for c in range(3))
        kl = kl / 12  # summed, divided by B x C
        ce = -torch.log_softmax(logits, dim=-1)[torch.arange(4), labels].mean()
    assert l1_image > 1e-3 and l1_text > 1e-3 and kl > 1e-4
    torch.testing.assert_close(out.loss_terms["image"], l1_image, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(out.loss_terms["text"], l1_text, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(out.loss_terms["logits"], kl, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(out.loss, ce + 10 * l1_image + 25 * l1_text + kl, rtol=1e-4, atol=1e-5)
    assert sorted(model.eval()(pixel_values=images, labels=labels).loss_terms) == ["classification"]  # training only


def test_promptsrc_defaults_are_the_papers():
    config = PromptSRCConfig(class_names=CLASSES)
    assert (config.text_prompt_depth, config.vision_prompt_depth, config.num_context_tokens, config.num_vision_tokens) == (9, 9, 4, 4)
    assert (config.image_loss_weight, config.text_loss_weight, config.gpa_mean, config.gpa_std) == (10, 25, 15, 1)
    assert len(IMAGENET_TEMPLATES) == 60 and IMAGENET_TEMPLATES[0] == "a photo of a {}."
    with pytest.raises(ValueError, match="`teacher_templates` must be a non-empty list"):
        PromptSRCConfig(class_names=CLASSES, teacher_templates=["no slot"])
    with pytest.raises(ValueError, match="`vision_prompt_depth`=5 exceeds the 4 blocks of the CLIP vision tower"):
        get_peft_model(make_wide_clip(), PromptSRCConfig(class_names=CLASSES, text_prompt_depth=1, vision_prompt_depth=5))


def test_gaussian_weights_by_hand():
    e = math.exp(-0.5)
    torch.testing.assert_close(gaussian_weights(3, 2.0, 1.0), torch.tensor([e, 1, e], dtype=torch.float64) / (1 + 2 * e))
    weights = gaussian_weights(20, 15.0, 1.0)  # the paper's run: 20 epochs, mean 15, std 1
    assert weights.argmax().item() == 14 and weights.sum().item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="`gpa_mean`"):
        gaussian_weights(2, 1000.0, 1.0)


def test_gaussian_prompt_aggregation_ends_at_the_weighted_sum_of_the_epochs_prompts():
    model = promptsrc(gpa_mean=2.0, gpa_std=1.0)
    tuner = model.base_model
    tensors = tuner._prompt_tensors("default")
    snapshots = []
    for epoch in (1, 2, 3):
        with torch.no_grad():
            for tensor in tensors:
                tensor.normal_()
        snapshots.append([t.detach().clone() for t in tensors])
        tuner.on_epoch_end(epoch, 3)
    weights = gaussian_weights(3, 2.0, 1.0)
    for i, tensor in enumerate(tensors):
        expected = sum(float(weights[e]) * snapshots[e][i] for e in range(3))
        torch.testing.assert_close(tensor.detach(), expected, rtol=1e-5, atol=1e-6)
    assert tuner.promptsrc_gpa["default"].epochs.item() == 3


@pytest.mark.parametrize("length, expected", [({"epochs": 2}, [(1, 2), (2, 2)]), ({"max_steps": 3}, [(1, 2), (2, 2)])])
def test_trainer_runs_gaussian_prompt_aggregation_after_every_epoch(tmp_path, images, labels, length, expected):
    """4 images, batch 2: an epoch is 2 steps; a run that stops mid-epoch (3 steps) still ends with the aggregation."""
    from peft_interp.training import InterpTrainer, TrainingArguments

    model = promptsrc(gpa_mean=1.0)
    calls = []
    tuner = model.base_model
    original = tuner.on_epoch_end
    tuner.on_epoch_end = lambda epoch, num_epochs: (calls.append((epoch, num_epochs)), original(epoch, num_epochs))
    rows = [{"pixel_values": image, "labels": label} for image, label in zip(images, labels)]
    collate = lambda batch: {key: torch.stack([row[key] for row in batch]) for key in batch[0]}  # noqa: E731
    args = TrainingArguments(str(tmp_path), batch_size=2, save_steps=0, **length)
    InterpTrainer(model, args, rows, collate, progress=False).train()
    assert calls == expected
    saved = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    running_sum = next(value for key, value in saved.items() if key.endswith("running_sum"))
    context = next(value for key, value in saved.items() if key.endswith("context"))
    assert torch.equal(running_sum[: context.numel()], context.flatten())  # the saved prompts are the GPA sum


# ------------------------------------------------------------------------------ PEFT behaviour of every learner
LEARNERS = {
    "coop": (lambda: make_clip(), CoOpConfig, {}),
    "cocoop": (lambda: make_clip(), CoCoOpConfig, {}),
    "kgcoop": (lambda: make_clip(), KgCoOpConfig, {}),
    "maple": (lambda: make_wide_clip(), MaPLeConfig, {"prompt_depth": 2}),
    "promptsrc": (lambda: make_wide_clip(), PromptSRCConfig, {"text_prompt_depth": 2, "vision_prompt_depth": 2,
                                                              "teacher_templates": TEMPLATES}),
}  # fmt: skip


@pytest.mark.parametrize("name", list(LEARNERS))
def test_learner_round_trip_is_bit_exact(tmp_path, images, labels, name):
    make, config_cls, settings = LEARNERS[name]
    model = get_peft_model(make(), config_cls(class_names=CLASSES, **settings))
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model.train()
    for _ in range(2):
        optimizer.zero_grad()
        model(pixel_values=images, labels=labels).loss.backward()
        optimizer.step()
    model.eval()
    model.base_model.set_class_names(["owl", "green fox"])
    expected = model(pixel_values=images).logits
    model.save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "adapter_model.safetensors")
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert sum(t.numel() for k, t in tensors.items() if "gpa" not in k) == trainable
    reloaded = PeftModel.from_pretrained(make(), tmp_path).eval()
    assert type(reloaded.base_model) is type(model.base_model)
    state = get_peft_model_state_dict(reloaded)
    assert state.keys() == tensors.keys() and all(torch.equal(state[k], v) for k, v in tensors.items())
    assert reloaded.peft_config["default"].class_names == ["owl", "green fox"]
    assert torch.equal(reloaded(pixel_values=images).logits, expected)


@pytest.mark.parametrize("name", list(LEARNERS))
def test_learner_with_adapter_disabled_is_zero_shot_clip(images, name):
    make, config_cls, settings = LEARNERS[name]
    template = "a blurry photo of a {}."
    model = get_peft_model(make(), config_cls(class_names=CLASSES, template=template, **settings)).eval()
    randomise(model)
    with torch.no_grad():
        expected = zero_shot_logits(make(), images, CLASSES, template)
        with model.disable_adapter():
            zero_shot = model(pixel_values=images).logits
        adapted = model(pixel_values=images).logits
    torch.testing.assert_close(zero_shot, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(adapted, expected, atol=1e-3)


@pytest.mark.parametrize(
    "config_cls, tuner_cls, recipe",
    [
        (CoCoOpConfig, CoCoOpModel, (0.002, 10, 1)),
        (KgCoOpConfig, KgCoOpModel, (0.002, 100, 128)),
        (MaPLeConfig, MaPLeModel, (0.0035, 5, 4)),
        (PromptSRCConfig, PromptSRCModel, (0.0025, 20, 4)),
    ],
)
def test_learners_are_registered_with_their_papers_recipes(config_cls, tuner_cls, recipe):
    config = config_cls(class_names=CLASSES)
    assert config.peft_type.value.startswith("PEFT_INTERP_")
    assert PEFT_TYPE_TO_CONFIG_MAPPING[config.peft_type] is config_cls
    assert PEFT_TYPE_TO_TUNER_MAPPING[config.peft_type] is tuner_cls
    depth = {"prompt_depth": 1} if config_cls is MaPLeConfig else {}
    if config_cls is PromptSRCConfig:
        depth = {"text_prompt_depth": 1, "vision_prompt_depth": 1}
    model = get_peft_model(make_wide_clip(), config_cls(class_names=CLASSES, **depth))
    got = model.base_model.training_recipe()
    assert (got.learning_rate, got.epochs, got.batch_size) == recipe
    assert (got.optimizer, got.scheduler, got.warmup_epochs, got.warmup_learning_rate) == ("sgd", "cosine", 1, 1e-5)


def test_cocoop_faithfulness_keeps_the_meta_net_bias(images):
    """The decoded prompt of CoCoOp is scored with its image-conditioned bias, as the model classifies."""
    from peft_interp.prompt_metrics import decoded_prompt_faithfulness

    model = cocoop(meta_net_reduction=4).eval()
    tuner = model.base_model
    with torch.no_grad():
        bias = torch.randn(32, generator=torch.Generator().manual_seed(0))
        tuner.cocoop_meta_net["default"].linear2.bias.copy_(bias)  # a pi(x) that changes the predictions here
        labels = model(pixel_values=images).logits.argmax(dim=-1)
        decoding = tuner.decode_context(candidate_ids=tuner.readable_vocabulary())
        words = tuner.context_layer.weight[decoding.token_ids]
        context = tuner.context_layer.context["default"]
        saved = context.clone()
        context.copy_(words)
        decoded = (model(pixel_values=images).logits.argmax(dim=-1) == labels).float().mean().item()
        context.copy_(saved)
        unbiased = tuner._encode_classes("default", context.expand(3, -1, -1))  # CoOp's prompts, no pi(x)
        image = tuner.encode_image(images)
        assert not torch.equal((image @ unbiased.T).argmax(dim=-1), labels)  # the bias matters here
    result = decoded_prompt_faithfulness(model, images, labels)
    assert result.continuous_accuracy == 1.0
    assert result.decoded_accuracy == decoded and result.decoded_prompt == decoding.prompt
    assert torch.equal(tuner.context_layer.context["default"], saved)  # restored
