"""Prompt interpretability metrics on constructed contexts."""

import torch
from peft import get_peft_model

from peft_interp import CoOpConfig, IPLConfig
from peft_interp.data import load_clip_tokenizer
from peft_interp.metrics import decoded_prompt_faithfulness, prompt_readability

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
    model = get_peft_model(make_clip(), IPLConfig(class_names=CLASSES))
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
