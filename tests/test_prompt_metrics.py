"""Prompt interpretability metrics on constructed contexts."""

from unittest import mock

import pytest
import torch
import torch.nn.functional as F
from peft import get_peft_model

from peft_interp import CoOpConfig, IntCoOpConfig, IPLConfig
from peft_interp.data import load_clip_tokenizer
from peft_interp.prompt_metrics import decoded_prompt_faithfulness, prompt_readability
from peft_interp.tuners.clip_prompt.model import TOKEN_EMBEDDING

from .tiny_models import make_clip

CLASSES = ["cat", "dog", "owl"]


def set_context_to_tokens(model, words):
    tokenizer = load_clip_tokenizer()
    ids = [tokenizer.convert_tokens_to_ids(word) for word in words]
    layer = model.base_model.context_layer
    with torch.no_grad():
        layer.context["default"].copy_(layer.weight[ids])
    return ids


def test_context_made_of_readable_words_scores_one():
    model = get_peft_model(make_clip(), CoOpConfig(class_names=CLASSES))
    set_context_to_tokens(model, ["bright</w>", "photo</w>", "small</w>", "animal</w>"])
    readability = prompt_readability(model)
    assert readability.readable_fraction == 1.0
    assert abs(readability.mean_similarity - 1.0) < 1e-5
    assert readability.nearest_tokens == ["bright", "photo", "small", "animal"]


def test_context_of_punctuation_and_word_pieces_is_not_readable():
    model = get_peft_model(make_clip(), CoOpConfig(class_names=CLASSES))
    set_context_to_tokens(model, [",</w>", "the</w>", "photo</w>", "phot"])  # punctuation, stop word, word, piece
    assert prompt_readability(model).readable_fraction == 0.25


def test_faithfulness_is_one_when_the_context_is_its_own_decoding(images, labels):
    model = get_peft_model(make_clip(), IPLConfig(class_names=CLASSES, variant="coverage_anchor"))
    model.base_model.select_tokens()
    decoding = model.explain_prompt()
    with torch.no_grad():
        model.base_model.context_layer.context["default"].copy_(model.base_model.context_layer.weight[decoding.token_ids])
    labels = model(pixel_values=images).logits.argmax(-1)  # the model is right on these labels
    result = decoded_prompt_faithfulness(model, images, labels)
    assert result.continuous_accuracy == 1.0 and result.decoded_accuracy == 1.0 and result.ratio == 1.0
    assert result.decoded_prompt == decoding.prompt


def test_faithfulness_drops_when_the_words_do_not_carry_the_prompt(images):
    model = get_peft_model(make_clip(), CoOpConfig(class_names=CLASSES))
    with torch.no_grad():
        model.base_model.context_layer.context["default"].normal_(std=5.0)  # far from every word
    labels = model(pixel_values=images).logits.argmax(-1)
    result = decoded_prompt_faithfulness(model, images, labels)
    assert result.continuous_accuracy == 1.0
    assert result.ratio == result.decoded_accuracy <= 1.0


# ------------------------------------------------------------------------------ IntCoOp layout (M + 1 soft positions)
def intcoop_like(kind, seed=11):
    """A plain IntCoOp or an IPL over IntCoOp, with a random context and non-zero image-conditioned offsets."""
    if kind == "intcoop":
        config = IntCoOpConfig(class_names=CLASSES, visual_prompt_depth=2)
    else:
        config = IPLConfig(class_names=CLASSES, context_learner="intcoop", intcoop={"visual_prompt_depth": 2},
                           variant="coverage_anchor")
    model = get_peft_model(make_clip(), config)
    torch.manual_seed(seed)
    with torch.no_grad():
        model.base_model.context_layer.context["default"].normal_()
        model.base_model.intcoop_conditioner["default"].attention.out_proj.weight.normal_(0, 0.3)
    return model


def hand_logits(model, images, context):
    """IntCoOp by hand, one image and one 77-token prompt at a time: [SOS] c + MHA(c, x) A(x) <name>. [EOS], with
    ``context`` ``(M, D)`` as the shared vectors (the attention's queries and the residual)."""
    tuner = model.base_model
    clip, tokenizer = tuner.model, load_clip_tokenizer()
    text = clip.text_model
    token_embedding = clip.get_submodule(TOKEN_EMBEDDING).get_base_layer()
    conditioner, extractor = tuner.intcoop_conditioner["default"], tuner.intcoop_attribute["default"]
    with torch.no_grad():
        vision = clip.vision_model(pixel_values=images)  # the prompted image tower
        tokens = clip.visual_projection(clip.vision_model.post_layernorm(vision.last_hidden_state))
        pooled = clip.visual_projection(vision.pooler_output)
        rows = []
        for b in range(len(images)):
            attended, _ = conditioner.attention(context[None], tokens[b : b + 1], tokens[b : b + 1])
            prefix = torch.cat([context + attended[0], extractor(pooled[b])[None]])  # (M + 1, D)
            features = []
            for name in CLASSES:
                ids = [tokenizer.bos_token_id] + [0] * len(prefix) + tokenizer.encode(f"{name}.", add_special_tokens=False)
                eos = len(ids)
                ids = torch.tensor(ids + [tokenizer.eos_token_id] * (77 - eos))
                embeds = token_embedding(ids[None]).clone()
                embeds[0, 1 : 1 + len(prefix)] = prefix
                hidden = embeds + text.embeddings.position_embedding(torch.arange(77))[None]
                hidden = text.encoder(inputs_embeds=hidden, is_causal=True).last_hidden_state
                features.append(F.normalize(clip.text_projection(text.final_layer_norm(hidden)[0, eos]), dim=-1))
            rows.append(clip.logit_scale.exp() * torch.stack(features) @ F.normalize(pooled[b], dim=-1))
    return torch.stack(rows)


@pytest.mark.parametrize("kind", ["intcoop", "ipl-intcoop"])
def test_faithfulness_of_intcoop_prompts_replaces_only_the_shared_context(kind, images):
    model = intcoop_like(kind)
    tuner = model.base_model
    if kind == "intcoop":
        token_ids = tuner.decode_context(candidate_ids=tuner.readable_vocabulary()).token_ids
    else:
        token_ids = tuner.explain_prompt().token_ids  # IPL's own selection
    context = tuner.context_layer.context["default"]
    saved = context.detach().clone()
    words = tuner.context_layer.weight[token_ids].detach()
    continuous = hand_logits(model, images, saved)
    torch.testing.assert_close(model(pixel_values=images).logits, continuous)  # the hand computation is IntCoOp
    decoded = hand_logits(model, images, words)
    # labels: the continuous prediction for images 0, 1, the decoded one for images 2, 3
    labels = torch.cat([continuous[:2].argmax(-1), decoded[2:].argmax(-1)])
    expected_continuous = (continuous.argmax(-1) == labels).float().mean().item()
    expected_decoded = (decoded.argmax(-1) == labels).float().mean().item()
    assert (expected_continuous, expected_decoded) == (0.75, 1.0)  # the words change a prediction (seed 11)

    result = decoded_prompt_faithfulness(model, images, labels)
    assert result.continuous_accuracy == expected_continuous
    assert result.decoded_accuracy == expected_decoded
    assert result.ratio == expected_decoded / expected_continuous
    words_text = " ".join(load_clip_tokenizer().convert_ids_to_tokens(token_ids.tolist())).replace("</w>", "")
    assert result.decoded_prompt == words_text + " [attribute] {}."
    assert torch.equal(context, saved)  # the learnt context is restored


def test_faithfulness_of_intcoop_is_one_when_the_context_is_its_decoding(images):
    model = intcoop_like("ipl-intcoop")
    tuner = model.base_model
    decoding = tuner.explain_prompt()
    with torch.no_grad():
        tuner.context_layer.context["default"].copy_(tuner.context_layer.weight[decoding.token_ids])
    labels = torch.tensor([0, 1, 2, 0])
    result = decoded_prompt_faithfulness(model, images, labels)
    assert result.continuous_accuracy == result.decoded_accuracy
    assert result.decoded_prompt == decoding.prompt  # IPL's own readable prompt


def test_faithfulness_names_an_unsupported_prompt_layout(images, labels):
    model = get_peft_model(make_clip(), CoOpConfig(class_names=CLASSES))

    def layout(self, config, name):  # a 5th soft position that is not a context vector
        return [4, 1, f"{name}."]

    with mock.patch.object(type(model.base_model), "_prompt_layout", layout), pytest.raises(ValueError, match="5 soft"):
        decoded_prompt_faithfulness(model, images, labels)
