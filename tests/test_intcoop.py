"""IntCoOp: 77-token parity, chunked batched encoding, losses, gradients, save/load, explanations, label sources."""

import json
import math
from unittest import mock

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from peft import PeftModel, get_peft_model

from peft_interp import IntCoOpConfig
from peft_interp.data import load_clip_tokenizer
from peft_interp.tuners.clip_prompt.model import TOKEN_EMBEDDING
from peft_interp.tuners.intcoop import (
    CaptionerAttributes,
    ConceptWorldAttributes,
    LabelFileAttributes,
    ZeroShotAttributes,
    add_attribute_column,
    attributes_of,
    clean_adjective,
    save_attribute_file,
)

from .tiny_models import IMAGE_SIZE, make_backbone, make_clip


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models on a shared 2-core machine: one thread avoids thread-pool contention (8x faster here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


CLASSES = ["red-headed blue-bodied bird", "cat", "small dog with long ears"]
ATTRIBUTES = ["green", None, "striped", "fluffy"]  # one per image of the `images` fixture


def intcoop(**overrides):
    overrides.setdefault("visual_prompt_depth", 2)  # of the tiny model's 4 vision blocks
    model = get_peft_model(make_clip(), IntCoOpConfig(class_names=CLASSES, **overrides))
    torch.manual_seed(3)
    with torch.no_grad():  # a trained-looking adapter: random context and a non-zero attention output
        model.base_model.context_layer.context["default"].normal_()
        model.base_model.intcoop_conditioner["default"].attention.out_proj.weight.normal_(0, 0.3)
    return model


def reference_logits(model, images, class_names, length=77):
    """IntCoOp written out by hand: one image at a time, full 77-token prompts [SOS] v(x) A(x) name. [EOS] pad."""
    tuner = model.base_model
    clip, tokenizer = tuner.model, load_clip_tokenizer()
    text = clip.text_model
    token_embedding = clip.get_submodule(TOKEN_EMBEDDING).get_base_layer()
    context = tuner.context_layer.context["default"]  # (M, D)
    conditioner, extractor = tuner.intcoop_conditioner["default"], tuner.intcoop_attribute["default"]
    vision = clip.vision_model(pixel_values=images)
    tokens = clip.visual_projection(clip.vision_model.post_layernorm(vision.last_hidden_state))  # (B, N, P)
    pooled = clip.visual_projection(vision.pooler_output)  # (B, P)
    logits = []
    for b in range(len(images)):
        attended, _ = conditioner.attention(context[None], tokens[b : b + 1], tokens[b : b + 1])
        prefix = torch.cat([context + attended[0], extractor(pooled[b])[None]])  # (M + 1, D)
        features = []
        for name in class_names:
            ids = [tokenizer.bos_token_id] + [0] * len(prefix) + tokenizer.encode(f"{name}.", add_special_tokens=False)
            eos = len(ids)
            ids = torch.tensor(ids + [tokenizer.eos_token_id] * (length - eos))
            embeds = token_embedding(ids[None]).clone()
            embeds[0, 1 : 1 + len(prefix)] = prefix
            hidden = embeds + text.embeddings.position_embedding(torch.arange(length))[None]
            hidden = text.encoder(inputs_embeds=hidden, is_causal=True).last_hidden_state
            features.append(F.normalize(clip.text_projection(text.final_layer_norm(hidden)[0, eos]), dim=-1))
        image = F.normalize(pooled[b], dim=-1)
        logits.append(clip.logit_scale.exp() * torch.stack(features) @ image)
    return torch.stack(logits)


@pytest.mark.parametrize("chunk", [None, 5])
def test_truncated_batched_prompts_match_full_77_token_per_image_reference(images, chunk):
    model = intcoop(max_prompts_per_text_call=chunk)
    assert model.base_model.prompts("default").input_ids.shape[1] < 20  # truncated, not 77
    with torch.no_grad():
        out = model(pixel_values=images)
        expected = reference_logits(model, images, CLASSES)
    assert out.text_embeds.shape == (4, 3, 16)
    torch.testing.assert_close(out.logits, expected, rtol=1e-5, atol=1e-5)


def test_chunked_encoding_equals_one_call_and_respects_the_budget(images, labels):
    def run(chunk):
        model = intcoop(max_prompts_per_text_call=chunk)
        clip = model.base_model.model
        with mock.patch.object(clip, "get_text_features", wraps=clip.get_text_features) as calls:
            out = model(pixel_values=images, labels=labels, attributes=ATTRIBUTES)
            text_calls = [c.kwargs["input_ids"].shape[0] for c in calls.call_args_list]
        out.loss.backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
        return out, text_calls, grads

    reference, calls, reference_grads = run(None)
    assert calls[0] == 12  # all B x C = 4 x 3 prompts in one call (later calls: frozen L_reg prompts)
    for chunk in (1, 5, 12):
        out, calls, grads = run(chunk)
        learnt_calls = calls[: math.ceil(12 / chunk)]
        assert learnt_calls == [min(chunk, 12 - i * chunk) for i in range(math.ceil(12 / chunk))]
        torch.testing.assert_close(out.text_embeds, reference.text_embeds, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(out.loss, reference.loss, rtol=1e-5, atol=1e-6)
        for name, grad in grads.items():
            torch.testing.assert_close(grad, reference_grads[name], rtol=1e-4, atol=1e-5)


def test_activation_checkpointing_gives_the_same_gradients(images, labels):
    grads = []
    for checkpointing in (True, False):
        model = intcoop(max_prompts_per_text_call=5, checkpoint_text_chunks=checkpointing)
        model(pixel_values=images, labels=labels, attributes=ATTRIBUTES).loss.backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.requires_grad})
    for name, grad in grads[0].items():
        torch.testing.assert_close(grad, grads[1][name], rtol=1e-5, atol=1e-6)


def test_gradients_reach_exactly_the_adapter_parameters(images, labels):
    model = intcoop()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {
        "base_model.model.text_model.embeddings.token_embedding.context.default",
        *(f"base_model.intcoop_conditioner.default.attention.{n}" for n in
          ("q_proj_weight", "k_proj_weight", "v_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias")),
        *(f"base_model.intcoop_attribute.default.net.{i}.{n}" for i in (0, 2) for n in ("weight", "bias")),
        *(f"base_model.model.vision_model.encoder.layers.{i}.prompt_sources.default.tokens" for i in (0, 1)),
    }  # fmt: skip
    model.train()
    out = model(pixel_values=images, labels=labels, attributes=ATTRIBUTES)
    assert set(out.loss_terms) == {"classification", "attribute", "regularization"}
    out.loss.backward()
    for name, parameter in model.named_parameters():
        if name in trainable:
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
        else:
            assert parameter.grad is None, name


def test_attribute_loss_is_masked_and_weighted(images, labels):
    model = intcoop(regularization_weight=0.0)
    tuner = model.base_model
    out = model(pixel_values=images, labels=labels, attributes=ATTRIBUTES)
    with torch.no_grad():
        pooled = tuner.image_features(images)[1]
        predicted = tuner.intcoop_attribute["default"](pooled)
        table = tuner.context_layer.weight
        tokenizer = load_clip_tokenizer()
        ids = {i: tokenizer.encode(w, add_special_tokens=False) for i, w in enumerate(ATTRIBUTES) if w}
        targets = {i: table[token_ids].mean(0) for i, token_ids in ids.items()}
    expected = torch.stack([F.mse_loss(predicted[i], t) for i, t in targets.items()]).mean()
    torch.testing.assert_close(out.loss_terms["attribute"], expected)
    torch.testing.assert_close(out.loss, out.loss_terms["classification"] + expected)
    no_labels = model(pixel_values=images, labels=labels, attributes=[None, "", None, " "])
    assert set(no_labels.loss_terms) == {"classification"}


def test_regularization_targets_use_each_images_attribute(images, labels):
    model = intcoop(attribute_loss_weight=0.0)
    tuner = model.base_model
    out = model(pixel_values=images, labels=labels, attributes=ATTRIBUTES)
    with torch.no_grad():
        reference = torch.stack([
            tuner.zero_shot_text_features(CLASSES, f"a photo of a {w} {{}}." if w else "a photo of a {}.")
            for w in ATTRIBUTES
        ])  # fmt: skip
    expected = (out.text_embeds - reference).pow(2).sum(-1).mean()
    torch.testing.assert_close(out.loss_terms["regularization"], expected)
    plain = intcoop(regularization_prompt="plain")(pixel_values=images, labels=labels, attributes=ATTRIBUTES)
    plain_reference = tuner.zero_shot_text_features(CLASSES, "a photo of a {}.")
    expected = (plain.text_embeds - plain_reference).pow(2).sum(-1).mean()
    torch.testing.assert_close(plain.loss_terms["regularization"], expected)


def test_teacher_forcing_and_detached_attribute(images, labels):
    forced = intcoop(attribute_slot_in_training="label")
    forced.train()
    attributes = ["green"] * 4
    logits_forced = forced(pixel_values=images, attributes=attributes).logits
    forced.eval()  # at test time the slot is always A(x)
    assert not torch.allclose(logits_forced, forced(pixel_values=images, attributes=attributes).logits)

    model = intcoop(classification_trains_attribute=False, attribute_loss_weight=0.0, regularization_weight=0.0)
    model(pixel_values=images, labels=labels, attributes=ATTRIBUTES).loss.backward()
    assert all(p.grad is None or not p.grad.any() for p in model.base_model.intcoop_attribute["default"].parameters())


def test_save_and_reload_exact(tmp_path, images, labels):
    model = intcoop(attention_keys="tokens", max_prompts_per_text_call=7)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(2):
        optimizer.zero_grad()
        model(pixel_values=images, labels=labels, attributes=ATTRIBUTES).loss.backward()
        optimizer.step()
    expected = model(pixel_values=images).logits
    explanation = model.explain(images)
    model.save_pretrained(tmp_path)
    reloaded = PeftModel.from_pretrained(make_clip(), tmp_path)
    assert reloaded.peft_config["default"].max_prompts_per_text_call == 7
    assert torch.equal(reloaded(pixel_values=images).logits, expected)
    assert torch.equal(reloaded.explain(images).attention, explanation.attention)
    assert reloaded.explain(images).attribute_words == explanation.attribute_words


def test_disable_adapter_is_zero_shot_clip(images):
    model = intcoop()
    with model.disable_adapter(), torch.no_grad():
        zero_shot = model(pixel_values=images).logits
        tuner = model.base_model
        image = F.normalize(tuner.model.get_image_features(pixel_values=images).pooler_output, dim=-1)
        text = tuner.zero_shot_text_features(CLASSES, "a photo of a {}.")
    torch.testing.assert_close(zero_shot, tuner.model.logit_scale.exp() * image @ text.T)


@pytest.mark.parametrize(
    "overrides", [dict(attention_keys="pooled"), dict(conditioning="replace"), dict(attribute_extractor="linear")]
)
def test_variants_run(images, labels, overrides):
    model = intcoop(**overrides)
    out = model(pixel_values=images, labels=labels, attributes=ATTRIBUTES)
    assert out.logits.shape == (4, 3) and torch.isfinite(out.loss)
    tokens = 1 if overrides.get("attention_keys") == "pooled" else 1 + (IMAGE_SIZE // 7) ** 2
    assert model.explain(images).attention.shape == (4, 4, tokens)


def test_visual_prompts_prompt_the_image_tower_and_depth_zero_keeps_it_frozen(images):
    model = intcoop(visual_prompt_depth=2)
    tuner = model.base_model
    clip = tuner.model
    with torch.no_grad():
        with model.disable_adapter():
            frozen = tuner.image_features(images)[1]
            reference = clip.get_image_features(pixel_values=images).pooler_output
    tokens, pooled = tuner.image_features(images)
    assert pooled.requires_grad and not torch.allclose(pooled, frozen)  # prompted, with autograd
    torch.testing.assert_close(frozen, reference)  # disabled: the plain CLIP image feature
    assert tokens.shape == (4, 1 + (IMAGE_SIZE // 7) ** 2, 16)

    unprompted = intcoop(visual_prompt_depth=0)
    tokens, pooled = unprompted.base_model.image_features(images)
    assert not pooled.requires_grad and not tokens.requires_grad
    torch.testing.assert_close(pooled, reference)
    assert not any("prompt_sources" in name for name, _ in unprompted.named_parameters())


def test_explain_reads_the_attribute_word(images):
    model = intcoop(explain_top_k=3)
    tuner = model.base_model
    tokenizer = load_clip_tokenizer()
    (green,) = tokenizer.encode("green", add_special_tokens=False)
    last = tuner.intcoop_attribute["default"].net[2]
    with torch.no_grad():  # A(x) = the embedding of "green" for every image
        last.weight.zero_()
        last.bias.copy_(tuner.context_layer.weight[green])
    explanation = model.explain(images)
    assert [words[0] for words in explanation.attribute_words] == ["green"] * 4
    assert explanation.attribute_token_ids.shape == (4, 3) and (explanation.attribute_token_ids[:, 0] == green).all()
    torch.testing.assert_close(explanation.attribute_scores[:, 0], torch.ones(4))
    assert all(word.isalpha() for words in explanation.attribute_words for word in words)
    attention = explanation.attention
    assert attention.shape == (4, 4, 17)
    torch.testing.assert_close(attention.sum(-1), torch.ones(4, 4))


# ---------------------------------------------------------------------------------------------- label sources
def test_clean_adjective():
    assert clean_adjective(" The Green, frog!") == "green"
    assert clean_adjective("a bright-red one") == "bright"
    assert clean_adjective("", "cat") is None
    assert clean_adjective("...", "cat") is None
    assert clean_adjective("Tree", "tree frog") is None  # the class name itself
    assert clean_adjective("running", "dog", is_adjective=lambda w: not w.endswith("ing")) is None


def tiny_dataset():
    from PIL import Image

    generator = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 255, (3, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=torch.uint8, generator=generator)
    images = [Image.fromarray(array) for array in pixels.numpy()]
    return Dataset.from_dict({"id": [10, 11, 12], "image": images, "class_name": ["tree frog", "cat", "dog"]})


def test_captioner_source_asks_about_the_class_and_cleans_answers():
    asked = []

    def fake_blip2(images, questions):
        asked.extend(questions)
        return ["Green.", "the cat", "Fluffy and white"][: len(questions)]

    labelled = add_attribute_column(tiny_dataset(), CaptionerAttributes(fake_blip2), batch_size=8)
    assert labelled["attribute"] == ["green", "", "fluffy"]
    assert attributes_of(labelled[:3]) == ["green", None, "fluffy"]
    assert asked == [f"Question: What is one adjective that describes the {n} in this image? Answer:" for n in
                     ["tree frog", "cat", "dog"]]  # fmt: skip
    with pytest.raises(ValueError, match="`question`"):
        CaptionerAttributes(fake_blip2, question="Describe it.")


def test_captioner_source_runs_a_blip2_model_end_to_end():
    """A tiny random BLIP-2 (OPT decoder, CLIP's BPE vocabulary): answers are decoded without the echoed question."""
    from transformers import Blip2Config, Blip2ForConditionalGeneration, Blip2Processor, BlipImageProcessor, OPTConfig

    tokenizer = load_clip_tokenizer()
    processor = Blip2Processor(BlipImageProcessor(size={"height": 28, "width": 28}), tokenizer, num_query_tokens=4)
    tiny = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    text = OPTConfig(vocab_size=len(tokenizer), hidden_size=32, ffn_dim=64, num_hidden_layers=1, num_attention_heads=2,
                     word_embed_proj_dim=32, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                     pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    config = Blip2Config(
        vision_config=dict(**tiny, image_size=28, patch_size=7),
        qformer_config=dict(**tiny, encoder_hidden_size=32, vocab_size=100),
        text_config=text.to_dict(),
        num_query_tokens=4,
        image_token_index=tokenizer.convert_tokens_to_ids(str(processor.image_token)),
    )
    torch.manual_seed(0)
    source = CaptionerAttributes.from_model(Blip2ForConditionalGeneration(config).eval(), processor)
    words = add_attribute_column(tiny_dataset(), source)["attribute"]
    assert len(words) == 3 and "question" not in words
    assert all(word == "" or word.isalpha() and word.islower() for word in words)


@pytest.mark.parametrize("suffix", [".json", ".csv"])
def test_label_file_source_round_trip(tmp_path, suffix):
    labelled = tiny_dataset().add_column("attribute", ["green", "", "spotted"])
    path = tmp_path / f"attributes{suffix}"
    save_attribute_file(labelled, path)
    relabelled = add_attribute_column(tiny_dataset(), LabelFileAttributes(path))
    assert relabelled["attribute"] == ["green", "", "spotted"]
    with pytest.raises(ValueError, match=".json or .csv"):
        LabelFileAttributes(tmp_path / "labels.txt")


def test_label_file_json_with_missing_ids(tmp_path):
    path = tmp_path / "labels.json"
    path.write_text(json.dumps({"10": "wet"}))
    assert add_attribute_column(tiny_dataset(), LabelFileAttributes(path))["attribute"] == ["wet", "", ""]


def test_labels_are_computed_once_and_cached_by_datasets(tmp_path):
    from datasets import load_from_disk

    tiny_dataset().save_to_disk(tmp_path / "data")
    calls = []

    def source(batch):
        calls.append(len(batch["id"]))
        return ["wet"] * len(batch["id"])

    source.fingerprint = "always-wet-v1"  # names the labels: datasets needs not hash the source
    first = add_attribute_column(load_from_disk(tmp_path / "data"), source)
    second = add_attribute_column(load_from_disk(tmp_path / "data"), source)
    assert calls == [3] and first["attribute"] == second["attribute"] == ["wet"] * 3
    with pytest.raises(ValueError, match="already has a column 'attribute'"):
        add_attribute_column(first, source)


def test_conceptworld_ground_truth_source():
    from peft_interp.data.conceptworld import load_conceptworld

    dataset = load_conceptworld("base_train", num_images=3, seed=0, image_size=32)
    labelled = add_attribute_column(dataset, ConceptWorldAttributes())
    assert labelled["attribute"] == [row["wing"]["color"] for row in dataset["attributes"]]
    with pytest.raises(ValueError, match="`part` must be one of"):
        ConceptWorldAttributes(part="beak")


def test_zero_shot_clip_source_picks_the_best_scoring_adjective():
    clip = make_clip()
    tokenizer = load_clip_tokenizer()
    vocabulary = ["green", "striped", "wet"]
    source = ZeroShotAttributes(clip, tokenizer, vocabulary=vocabulary)
    dataset = tiny_dataset()
    words = add_attribute_column(dataset, source)["attribute"]
    pixels = source.transform(dataset["image"])
    with torch.no_grad():
        image = F.normalize(clip.get_image_features(pixel_values=pixels).pooler_output, dim=-1)
        for row, name in enumerate(dataset["class_name"]):
            prompts = [f"a photo of a {a} {name}." for a in vocabulary]
            ids = tokenizer(prompts, padding=True, return_tensors="pt").input_ids
            text = F.normalize(clip.get_text_features(input_ids=ids).pooler_output, dim=-1)
            assert words[row] == vocabulary[int((text @ image[row]).argmax())]


# ------------------------------------------------------------------------------------------------------ errors
def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="`attention_keys` must be one of \\['tokens', 'pooled'\\], got 'cls'"):
        IntCoOpConfig(class_names=CLASSES, attention_keys="cls")
    with pytest.raises(ValueError, match="`attribute_loss` must be one of"):
        IntCoOpConfig(class_names=CLASSES, attribute_loss="huber")
    with pytest.raises(ValueError, match="`max_prompts_per_text_call` must be a positive int, got 0"):
        IntCoOpConfig(class_names=CLASSES, max_prompts_per_text_call=0)
    with pytest.raises(ValueError, match="`regularization_weight` must be >= 0"):
        IntCoOpConfig(class_names=CLASSES, regularization_weight=-1.0)
    with pytest.raises(ValueError, match="`class_specific_context`"):
        IntCoOpConfig(class_names=CLASSES, class_specific_context=True)
    with pytest.raises(ValueError, match="`cache_image_features`"):
        IntCoOpConfig(class_names=CLASSES, cache_image_features=True)
    with pytest.raises(ValueError, match="`visual_prompt_depth` must be an int >= 0"):
        IntCoOpConfig(class_names=CLASSES, visual_prompt_depth=-1)
    with pytest.raises(ValueError, match="`visual_prompt_depth`=9 exceeds the 4 vision blocks"):
        get_peft_model(make_clip(), IntCoOpConfig(class_names=CLASSES))
    with pytest.raises(ValueError, match="`num_attention_heads`=3 must divide the text width 32"):
        get_peft_model(make_clip(), IntCoOpConfig(class_names=CLASSES, num_attention_heads=3, visual_prompt_depth=0))
    with pytest.raises(ValueError, match="adapts a CLIPModel"):
        get_peft_model(make_backbone("dinov2"), IntCoOpConfig(class_names=CLASSES))
    with pytest.raises(ValueError, match="`attributes` has 2 entries for 4 images"):
        intcoop()(pixel_values=torch.randn(4, 3, IMAGE_SIZE, IMAGE_SIZE), attributes=["a", "b"])
