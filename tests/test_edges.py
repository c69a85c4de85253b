"""Edges of the CLIP prompt core: prompts of exactly CLIP's 77 tokens, and class-name words (hyphenated parts
included) kept out of the readable vocabulary that context words are read from."""

from __future__ import annotations

import pytest
import torch
from peft import get_peft_model

from peft_interp import CoOpConfig
from peft_interp.data import load_clip_tokenizer
from peft_interp.tuners.clip_prompt.prompts import build_prompts
from peft_interp.tuners.clip_prompt.vocabulary import STOP_WORDS, class_name_words, readable_token_ids

from .tiny_models import make_clip


def long_name(tokens: int) -> str:
    """A class name of exactly ``tokens`` BPE tokens ("cat" is one token)."""
    return " ".join(["cat"] * tokens)


def test_a_prompt_of_exactly_77_tokens_is_accepted_and_78_refused(images):
    # [SOS] + 4 context + name + "." + [EOS] = 77 with a name of 70 tokens.
    tokenizer = load_clip_tokenizer()
    assert len(tokenizer.encode(long_name(70) + ".", add_special_tokens=False)) == 71
    model = get_peft_model(make_clip(), CoOpConfig(class_names=["dog", long_name(70)]))
    prompts = model.base_model.prompts("default")
    assert prompts.input_ids.shape == (2, 77) and prompts.eos_positions.tolist()[1] == 76
    assert model(pixel_values=images).logits.shape == (4, 2)

    model.set_class_names(["dog", long_name(71)])
    with pytest.raises(ValueError, match=r"is 78 tokens long; CLIP reads at most 77"):
        model(pixel_values=images)


def test_build_prompts_limit_is_inclusive():
    tokenizer = load_clip_tokenizer()
    batch = build_prompts(tokenizer, [[3, "cat"], [2, "cat cat"]], max_length=6)
    assert batch.input_ids.shape == (2, 6)
    assert batch.soft_mask.sum(1).tolist() == [3, 2]
    assert batch.soft_mask[0].tolist() == [False, True, True, True, False, False]
    with pytest.raises(ValueError, match="is 7 tokens long; CLIP reads at most 6"):
        build_prompts(tokenizer, [[4, "cat"], [1, "cat cat"]], max_length=6)


def test_class_name_words_split_spaces_and_hyphens_lower_case():
    assert class_name_words(["Red-headed Woodpecker", "sea  lion"]) == {"red", "headed", "woodpecker", "sea", "lion"}


def test_readable_vocabulary_excludes_class_words_and_stop_words():
    tokenizer = load_clip_tokenizer()
    vocab = tokenizer.get_vocab()
    words = ["red", "headed", "woodpecker", "lion", "photo", "green"]
    ids = {word: vocab[f"{word}</w>"] for word in words}
    all_readable = set(readable_token_ids(tokenizer).tolist())
    assert set(ids.values()) <= all_readable
    assert vocab["the</w>"] not in all_readable and "the" in STOP_WORDS  # stop words are never readable
    assert vocab["ab</w>"] not in all_readable  # shorter than 3 letters
    excluded = set(readable_token_ids(tokenizer, exclude_words=class_name_words(["Red-headed woodpecker", "lion"]))
                   .tolist())  # fmt: skip
    assert excluded == all_readable - {ids[w] for w in ("red", "headed", "woodpecker", "lion")}


def test_coop_readable_prompt_reads_class_name_words_when_the_context_is_them():
    """Honest decoding: a context sitting exactly on the embeddings of class-name words reads as those words (hiding
    them would misreport the prompt); only IPL's candidate words exclude class-name words (tested above)."""
    model = get_peft_model(make_clip(), CoOpConfig(class_names=["red-headed woodpecker", "lion"]))
    tuner = model.base_model
    vocab = tuner.tokenizer().get_vocab()
    table = tuner.context_layer.weight
    with torch.no_grad():
        ids = [vocab[f"{word}</w>"] for word in ("red", "headed", "lion", "photo")]
        tuner.context_layer.context["default"].copy_(table[ids])
    metadata = tuner.explanation_metadata()
    assert metadata["context_tokens"] == ["red", "headed", "lion", "photo"]
    assert tuner.decode_context().tokens == ["red", "headed", "lion", "photo"]  # unrestricted decoding


def test_readable_word_length_bounds_are_inclusive_and_words_must_be_whole_and_alphabetic():
    tokenizer = load_clip_tokenizer()
    vocab = tokenizer.get_vocab()
    readable = set(readable_token_ids(tokenizer).tolist())
    assert vocab["aaa</w>"] in readable and vocab["accomplishments</w>"] in readable  # 3 and 15 letters
    assert vocab["ab</w>"] not in readable and vocab["astrophotography</w>"] not in readable  # 2 and 16
    assert vocab["photo"] not in readable  # a word piece, not a whole word
    assert not any(not tokenizer.convert_ids_to_tokens(i)[:-4].isalpha() for i in list(readable)[:2000])
    narrow = set(readable_token_ids(tokenizer, min_length=4, max_length=5).tolist())
    assert vocab["aaa</w>"] not in narrow and vocab["photo</w>"] in narrow and vocab["photos</w>"] not in narrow
    ids = readable_token_ids(tokenizer)
    assert torch.equal(ids, ids.sort().values) and ids.dtype == torch.long


def test_prompt_layout_tokens_and_soft_positions():
    """``[SOS] X X <words> [EOS]``: soft positions where the ints are, text tokenised per segment, empty text
    segments skipped, rows padded with EOS."""
    tokenizer = load_clip_tokenizer()
    vocab = tokenizer.get_vocab()
    batch = build_prompts(tokenizer, [[2, "red cat."], [1, "", 1, "dog"]])
    sos, eos, x = tokenizer.bos_token_id, tokenizer.eos_token_id, vocab["x</w>"]
    assert batch.input_ids.tolist() == [
        [sos, x, x, vocab["red</w>"], vocab["cat</w>"], vocab[".</w>"], eos],
        [sos, x, x, vocab["dog</w>"], eos, eos, eos],
    ]
    assert batch.soft_mask.tolist() == [[False, True, True, False, False, False, False],
                                        [False, True, True, False, False, False, False]]  # fmt: skip
    assert batch.eos_positions.tolist() == [6, 4]


def test_wrapped_modules_say_what_they_add_in_the_model_repr():
    from peft_interp import IVPTConfig

    from .tiny_models import make_backbone

    assert "(token_embedding): context.ContextEmbedding(" in repr(get_peft_model(make_clip(), CoOpConfig(class_names=["a"])))
    text = repr(get_peft_model(make_backbone("dinov2"), IVPTConfig(num_classes=2, num_prototypes=[3, 2])))
    assert "(embeddings): shifted.EmbeddingShift(" in text and "(3): prompted.PromptedBlock(" in text


def test_num_classes_must_be_a_positive_int_not_a_bool_or_string():
    from peft_interp import VPTDeepConfig

    for bad in (True, "3", 0, 2.0):
        with pytest.raises(ValueError, match="`num_classes` must be a positive int"):
            VPTDeepConfig(num_classes=bad)
    assert VPTDeepConfig(num_classes=1).num_classes == 1


def test_context_decoding_reports_euclidean_distance_and_cosine_to_the_chosen_token():
    model = get_peft_model(make_clip(), CoOpConfig(class_names=["dog"]))
    tuner = model.base_model
    vocab = tuner.tokenizer().get_vocab()
    table = tuner.context_layer.weight
    ids = [vocab[f"{word}</w>"] for word in ("green", "photo", "small", "bright")]
    shift = torch.zeros(4, table.shape[1])
    shift[1, 0] = 1e-3  # a small step away from "photo": still nearest to it
    with torch.no_grad():
        tuner.context_layer.context["default"].copy_(table[ids] + shift)
    decoding = tuner.decode_context()
    assert decoding.tokens == ["green", "photo", "small", "bright"] and decoding.token_ids.tolist() == ids
    torch.testing.assert_close(decoding.distances, torch.tensor([0.0, 1e-3, 0.0, 0.0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(decoding.similarities[[0, 2, 3]], torch.ones(3), atol=1e-5, rtol=0)
    assert 0.99 < decoding.similarities[1] < 1 - 1e-6
    assert decoding.prompt == "green photo small bright {}."
