"""IPL's default hybrid prompt: token layout and embeddings by hand, task-loss selection against brute force,
key/value reuse, the alternating schedule, novel classes, the trainer hook, other context learners, the decoded
prompt's faithfulness."""

import math
from unittest import mock

import pytest
import torch
import torch.nn.functional as F
from peft import PeftModel, get_peft_model

from peft_interp import CoOpConfig, CoOpModel, IPLConfig
from peft_interp.data import load_clip_tokenizer
from peft_interp.prompt_metrics import decoded_prompt_faithfulness
from peft_interp.training import InterpTrainer, TrainingArguments
from peft_interp.tuners.ipl import HybridPromptDecoding, register_context_learner
from peft_interp.tuners.ipl.model import IPL_MODELS
from peft_interp.tuners.ipl.probe import encode_prefixes, encode_suffixes, extend_prefixes
from peft_interp.tuners.ipl.selection import TaskLossSelector, probe_prefix_ids

from .tiny_models import make_clip

CLASSES = ["red-headed blue-bodied bird", "cat", "small dog"]
TOKENIZER = load_clip_tokenizer()
SOS, EOS = TOKENIZER.bos_token_id, TOKENIZER.eos_token_id


def word_id(word: str) -> int:
    (token_id,) = TOKENIZER.encode(word, add_special_tokens=False)
    return token_id


def hybrid(**overrides):
    overrides.setdefault("vocabulary_size", 60)
    return get_peft_model(make_clip(), IPLConfig(class_names=CLASSES, **overrides))


def selection_data(num_images: int = 12, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    features = F.normalize(torch.randn(num_images, 16, generator=generator), dim=-1)
    return features, torch.arange(num_images) % len(CLASSES)


def text_features_by_hand(clip, token_ids: list[int], soft_rows: dict[int, torch.Tensor]) -> torch.Tensor:
    """A 77-token prompt through the text tower by hand: frozen embeddings, soft rows written in, causal, EOS read."""
    text = clip.text_model
    table = clip.text_model.embeddings.token_embedding.get_base_layer().weight
    eos = len(token_ids) - 1
    ids = torch.tensor(token_ids + [EOS] * (77 - len(token_ids)))
    embeds = table[ids].clone()
    for position, row in soft_rows.items():
        embeds[position] = row
    hidden = (embeds + text.embeddings.position_embedding.weight)[None]
    hidden = text.encoder(inputs_embeds=hidden, is_causal=True).last_hidden_state
    return F.normalize(clip.text_projection(text.final_layer_norm(hidden)[0, eos]), dim=-1)


# ------------------------------------------------------------------------------------------------ the layout
def test_hybrid_layout_tokens_and_embeddings_match_a_hand_computation(images):
    model = hybrid(num_words=2, tokens_per_word=2, num_class_context_tokens=3)
    tuner = model.base_model
    assert model.peft_config["default"].num_context_tokens == 7
    context = tuner.context_layer.context["default"]
    with torch.no_grad():
        context.normal_()  # a trained-looking context
        tuner.ipl_assignment["default"].token_ids.copy_(torch.tensor([word_id("striped"), word_id("bright")]))
    prompts = tuner.prompts("default")
    x = TOKENIZER.encode("X", add_special_tokens=False)[0]
    for row, name in enumerate(CLASSES):
        # [SOS] A A striped A A bright P P P <name> . [EOS]
        expected = [SOS, x, x, word_id("striped"), x, x, word_id("bright"), x, x, x,
                    *TOKENIZER.encode(f"{name}.", add_special_tokens=False), EOS]  # fmt: skip
        length = len(expected)
        assert prompts.input_ids[row, :length].tolist() == expected
        assert prompts.soft_mask[row].nonzero().squeeze(1).tolist() == [1, 2, 4, 5, 7, 8, 9]
        assert int(prompts.eos_positions[row]) == length - 1
    with torch.no_grad():
        out = model(pixel_values=images)
        clip = tuner.model
        text = torch.stack([
            text_features_by_hand(clip, prompts.input_ids[row, : int(prompts.eos_positions[row]) + 1].tolist(),
                                  dict(zip([1, 2, 4, 5, 7, 8, 9], context)))
            for row in range(len(CLASSES))
        ])  # fmt: skip
        image = F.normalize(clip.get_image_features(pixel_values=images).pooler_output, dim=-1)
    torch.testing.assert_close(out.text_embeds, text, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.logits, clip.logit_scale.exp() * image @ text.T, rtol=1e-5, atol=1e-5)
    # the words are the frozen token embeddings: no gradient reaches the token table, only the 7 learnt vectors
    model(pixel_values=images, labels=torch.tensor([0, 1, 2, 0])).loss.backward()
    assert [n for n, p in model.named_parameters() if p.grad is not None] == [
        "base_model.model.text_model.embeddings.token_embedding.context.default"
    ]


def test_empty_slots_hold_the_placeholder_and_init_follows_the_reference_trainer():
    torch.manual_seed(0)
    model = hybrid(num_words=3, tokens_per_word=4, num_class_context_tokens=4)
    tuner = model.base_model
    ids = tuner.prompts("default").input_ids[1]
    assert ids.tolist().count(word_id("0")) == 3
    decoding = model.explain_prompt()
    assert isinstance(decoding, HybridPromptDecoding)
    assert decoding.prompt == "* * * * 0 * * * * 0 * * * * 0 * * * * {}."
    assert decoding.words == ["0", "0", "0"] and decoding.word_ids.tolist() == [-1, -1, -1]
    context = tuner.context_layer.context["default"]  # A: N(0, 0.01), P: N(0, 0.02)
    assert 0.007 < context[:12].std() < 0.013 and 0.015 < context[12:].std() < 0.025


# ------------------------------------------------------------------------------------------------ key/value reuse
def test_prefix_reuse_gives_the_features_of_the_whole_prompts():
    clip = make_clip()
    prefixes = [[SOS, 320, 1125], [SOS, 320, 2368, 267, 593, 29588, 525]]  # different lengths (right-padded)
    suffixes = torch.tensor([[736, EOS], [1746, EOS], [271, EOS]])
    features = encode_suffixes(clip, encode_prefixes(clip, prefixes), suffixes)
    for r, prefix in enumerate(prefixes):
        for w, suffix in enumerate(suffixes.tolist()):
            ids = torch.tensor([prefix + suffix])
            expected = F.normalize(clip.get_text_features(input_ids=ids).pooler_output, dim=-1)[0]
            torch.testing.assert_close(features[r, w], expected, rtol=1e-5, atol=1e-6)


def test_an_extended_cache_equals_the_cache_of_the_longer_prefixes():
    clip = make_clip()
    selected = [word_id("bright"), word_id("striped")]
    rows = probe_prefix_ids(TOKENIZER, "a photo of a {}, with emphasis on:", CLASSES, selected)  # ends with ","
    assert [TOKENIZER.decode(row[1:]) for row in rows][1] == "a photo of a cat , with emphasis on : bright , striped ,"
    direct = encode_prefixes(clip, rows)
    extended = extend_prefixes(clip, encode_prefixes(clip, [row[:-1] for row in rows]), [rows[0][-1]])
    assert torch.equal(extended.lengths, direct.lengths)
    suffixes = torch.tensor([[word_id("wooden"), EOS]])
    torch.testing.assert_close(encode_suffixes(clip, extended, suffixes), encode_suffixes(clip, direct, suffixes))


# ----------------------------------------------------------------------------------------- the selection objective
TOY_WORDS = ["bright", "striped", "wooden", "fluffy", "shiny", "round", "green", "metal", "soft", "dark"]


def brute_force_objective(clip, features, labels, class_names, selected: list[str], word: str, gamma: float) -> float:
    """L_rel(S + w) + gamma * D(w | S) from strings: the tokenizer, get_text_features and explicit sums."""
    scale = clip.logit_scale.exp().item()

    def encode(texts):
        ids = TOKENIZER(texts, padding=True, return_tensors="pt").input_ids
        return F.normalize(clip.get_text_features(input_ids=ids).pooler_output, dim=-1)

    with torch.no_grad():
        probes = encode([f"a photo of a {c}, with emphasis on: " + ", ".join(selected + [word]) for c in class_names])
        loss = 0.0
        for feature, label in zip(features, labels.tolist()):
            logits = [scale * float(feature @ probe) for probe in probes]
            loss -= logits[label] - math.log(sum(math.exp(v) for v in logits))
        loss /= len(labels)
        if not selected:
            return loss
        alone = encode([word, *selected])
        return loss + gamma * sum(float(alone[0] @ other) for other in alone[1:]) / len(selected)


def test_greedy_steps_match_brute_force_on_a_toy_vocabulary():
    clip = make_clip()
    features, labels = selection_data()
    candidates = torch.tensor([word_id(w) for w in TOY_WORDS])
    gamma = 0.5
    selector = TaskLossSelector(clip, TOKENIZER, CLASSES, "a photo of a {}, with emphasis on:", features, labels,
                                candidates, redundancy_weight=gamma, prefilter_size=None, lazy_greedy=False)  # fmt: skip
    selected: list[str] = []
    for _ in range(3):
        step = selector.step([word_id(w) for w in selected])
        remaining = [w for w in TOY_WORDS if w not in selected]
        objectives = {w: brute_force_objective(clip, features, labels, CLASSES, selected, w, gamma) for w in remaining}
        best = min(objectives, key=objectives.get)
        assert step.word == best and step.num_scored == len(remaining)
        assert math.isclose(step.objective, objectives[best], rel_tol=1e-4)
        assert math.isclose(step.objective, step.relevance_loss + gamma * step.redundancy, rel_tol=1e-5)
        selected.append(step.word)
    assert len(set(selected)) == 3


def test_prefilter_scores_only_its_pool_and_lazy_greedy_respects_its_bounds():
    clip = make_clip()
    features, labels = selection_data()
    candidates = torch.tensor([word_id(w) for w in TOY_WORDS])
    exact = TaskLossSelector(clip, TOKENIZER, CLASSES, "a photo of a {}, with emphasis on:", features, labels,
                             candidates, prefilter_size=None, lazy_greedy=False)  # fmt: skip
    lazy = TaskLossSelector(clip, TOKENIZER, CLASSES, "a photo of a {}, with emphasis on:", features, labels,
                            candidates, prefilter_size=6, lazy_greedy=True, lazy_batch_size=1)  # fmt: skip
    first = lazy.step([])
    assert first.num_scored == 6 and len(lazy.stale_gains) == 6
    probe = lazy.probe_features([])
    pool = lazy.prefilter(probe, torch.ones(len(candidates), dtype=torch.bool))
    proxy = (lazy.word_features @ probe.T).std(dim=1)  # the spread over classes, by hand
    assert set(pool.tolist()) == set(proxy.topk(6).indices.tolist())
    losses = exact.relevance_losses([], candidates)
    assert first.token_id == int(candidates[pool][losses[pool].argmin()])  # the exact best of the pool
    stale = dict(lazy.stale_gains)
    second = lazy.step([first.token_id])
    assert second.token_id != first.token_id
    # lazy greedy's invariant: every candidate of the pool left with its stale gain had a bound (stale gain minus its
    # current penalty) no better than the fresh gain of the pick
    pick_gain = second.base_loss - second.relevance_loss - 0.1 * second.redundancy
    index = {int(token_id): i for i, token_id in enumerate(candidates)}
    first_feature = lazy.word_features[index[first.token_id]]
    pool = lazy.prefilter(lazy.probe_features([first.token_id]), candidates != first.token_id)
    unscored = [int(candidates[i]) for i in pool if lazy.stale_gains.get(int(candidates[i])) == stale.get(int(candidates[i]))]
    for token_id in unscored:
        bound = stale[token_id] - 0.1 * float(lazy.word_features[index[token_id]] @ first_feature)
        assert bound <= pick_gain + 1e-6
    assert second.num_scored + len(unscored) == len(pool)


# ------------------------------------------------------------------------------------------------ the schedule
def test_one_word_per_block_of_epochs_up_to_k_and_no_repeated_word():
    model = hybrid(num_words=3, selection_block_epochs=2)
    tuner = model.base_model
    features, labels = selection_data()
    tuner.set_selection_data(features, labels, steps_per_epoch=3)
    filled = []
    for step in range(24):  # epochs 0..7
        model.on_train_step_begin(step)
        filled.append(tuner.ipl_assignment["default"].filled)
    # epoch e (steps 3e..3e+2) has min(3, e // 2 + 1) words
    assert filled == [min(3, (step // 3) // 2 + 1) for step in range(24)]
    decoding = model.explain_prompt()
    words = [token for token in decoding.prompt.split() if token not in ("*", "{}.")]
    assert words == decoding.words and len(set(words)) == 3  # one word per slot, none repeated
    assert [s.word for s in tuner.selection_history()] == words
    assert model.peft_config["default"].readable_prompt == decoding.prompt
    assert decoding.probe_prompt == "a photo of a {}, with emphasis on: " + ", ".join(words)
    assert not {"red", "blue", "cat", "dog", "small", "bird"} & set(words)  # class-name words excluded


def test_a_resumed_run_fills_the_slots_due_at_its_epoch():
    model = hybrid(num_words=2)
    model.base_model.set_selection_data(*selection_data(), steps_per_epoch=4)
    model.on_train_step_begin(9)  # epoch 2: both words are due
    assert model.base_model.ipl_assignment["default"].filled == 2


def test_novel_classes_reuse_the_words(images):
    model = hybrid()
    tuner = model.base_model
    tuner.set_selection_data(*selection_data(), steps_per_epoch=1)
    model.on_train_step_begin(1)
    words = tuner.ipl_assignment["default"].token_ids.tolist()
    model.set_class_names(["owl", "green fox"])
    prompts = tuner.prompts("default")
    for row in prompts.input_ids:
        assert [row[3].item(), row[6].item()] == words
    assert model(pixel_values=images).logits.shape == (4, 2)


def test_hybrid_errors_name_what_to_do():
    model = hybrid()
    with pytest.raises(ValueError, match="set_selection_data\\(image_embeds, labels, steps_per_epoch\\)"):
        model.on_train_step_begin(0)
    with pytest.raises(ValueError, match="`select_tokens` is the coverage_anchor variant's step"):
        model.base_model.select_tokens()
    with pytest.raises(ValueError, match="`num_context_tokens`=4 but the hybrid prompt has .* = 6 learnt vectors"):
        IPLConfig(class_names=CLASSES, num_context_tokens=4)
    with pytest.raises(ValueError, match="`prefilter_size` must be a positive int or None, got 0"):
        IPLConfig(class_names=CLASSES, prefilter_size=0)
    with pytest.raises(ValueError, match="`steps_per_epoch` must be a positive int"):
        model.base_model.set_selection_data(*selection_data(), steps_per_epoch=0)
    features, labels = selection_data(4)
    with pytest.warns(UserWarning, match="IPL is training with every word slot empty"):
        model.train()(image_embeds=features, labels=labels)


# --------------------------------------------------------------------------------------- the trainer and saving
def test_the_trainer_feeds_the_selection_and_the_words_survive_save_and_load(tmp_path):
    model = hybrid(num_words=2)
    torch.manual_seed(0)
    rows = [{"pixel_values": torch.randn(3, 28, 28), "labels": torch.tensor(i % 3)} for i in range(6)]
    collate = lambda batch: {key: torch.stack([row[key] for row in batch]) for key in batch[0]}  # noqa: E731
    args = TrainingArguments(str(tmp_path / "run"), max_steps=4, batch_size=3, logging_steps=1, report_to=None)
    InterpTrainer(model, args, rows, collate, progress=False).train()  # 2 steps per epoch: epochs 0 and 1
    tuner = model.base_model
    assert tuner.ipl_assignment["default"].filled == 2
    selector = tuner.__dict__["_selection"]["default"].selector
    expected = tuner.frozen_image_features(torch.stack([row["pixel_values"] for row in rows]))
    torch.testing.assert_close(selector.image_embeds, expected)  # un-augmented, frozen features of every row
    model.eval()
    pixels = torch.stack([row["pixel_values"] for row in rows[:2]])
    logits, prompt = model(pixel_values=pixels).logits, model.explain_prompt().prompt
    reloaded = PeftModel.from_pretrained(make_clip(), tmp_path / "run" / "adapter").eval()
    assert reloaded.explain_prompt().prompt == prompt == reloaded.peft_config["default"].readable_prompt
    torch.testing.assert_close(reloaded(pixel_values=pixels).logits, logits)


# ----------------------------------------------------------------------------------------- other context learners
def test_intcoop_learner_interleaves_words_with_its_conditioned_context(images, labels):
    model = hybrid(context_learner="intcoop", intcoop={"visual_prompt_depth": 1})
    tuner = model.base_model
    with torch.no_grad():
        tuner.ipl_assignment["default"].token_ids.copy_(torch.tensor([word_id("striped"), word_id("bright")]))
    prompts = tuner.prompts("default")
    assert prompts.input_ids[0, [3, 6]].tolist() == [word_id("striped"), word_id("bright")]
    assert prompts.soft_mask[0].nonzero().squeeze(1).tolist() == [1, 2, 4, 5, 7, 8, 9]  # 6 context + attribute
    out = model(pixel_values=images, labels=labels, attributes=["green", None, "dark", "soft"])
    assert set(out.loss_terms) == {"classification", "attribute", "regularization"}
    assert model.explain_prompt().prompt == "* * striped * * bright * * [attribute] {}."


class KindOfCoOp(CoOpModel):
    """A toy learner: ``[SOS] ctx <class>, a kind of thing. [EOS]``."""

    def _prompt_layout(self, config, class_name):
        return [config.num_context_tokens, f"{class_name}, a kind of thing."]


class BrokenLearner(CoOpModel):
    def _prompt_layout(self, config, class_name):
        return [f"{class_name}.", config.num_context_tokens]


def test_other_learners_plug_in_through_the_registration_hook():
    try:
        model_cls = register_context_learner("kind_of_coop", KindOfCoOp, CoOpConfig)
        model = hybrid(context_learner="kind_of_coop")
        assert type(model.base_model) is model_cls and isinstance(model.base_model, KindOfCoOp)
        ids = model.base_model.prompts("default").input_ids[1]
        tail = TOKENIZER.encode("cat, a kind of thing.", add_special_tokens=False)
        assert ids[9 : 9 + len(tail)].tolist() == tail
        register_context_learner("broken", BrokenLearner, CoOpConfig)
        with pytest.raises(ValueError, match="starts with its 6 context vectors; IPLBrokenLearner gives"):
            hybrid(context_learner="broken").base_model.prompts("default")
        with pytest.raises(ValueError, match="already registered"):
            register_context_learner("broken", BrokenLearner, CoOpConfig)
    finally:
        from peft_interp.tuners.ipl.config import LEARNER_CONFIGS

        for name in ("kind_of_coop", "broken"):
            IPL_MODELS.pop(name, None)
            LEARNER_CONFIGS.pop(name, None)


@pytest.mark.parametrize("learner", ["cocoop", "kgcoop"])
def test_cocoop_and_kgcoop_take_the_hybrid_prompt_and_keep_their_own_terms(learner, images, labels):
    model = hybrid(context_learner=learner)
    tuner = model.base_model
    with torch.no_grad():
        tuner.ipl_assignment["default"].token_ids.copy_(torch.tensor([word_id("striped"), word_id("bright")]))
    assert tuner.prompts("default").input_ids[0, [3, 6]].tolist() == [word_id("striped"), word_id("bright")]
    out = model(pixel_values=images, labels=labels)
    if learner == "cocoop":  # one prompt set per image: the meta-net bias on the learnt vectors
        assert out.text_embeds.shape == (4, len(CLASSES), 16)
    else:  # KgCoOp's knowledge distance is kept
        assert "knowledge" in " ".join(out.loss_terms)


# ------------------------------------------------------------------------------------------ decoded faithfulness
def test_decoded_faithfulness_keeps_the_selected_words_and_decodes_only_the_learnt_vectors(images, labels):
    model = hybrid()
    tuner = model.base_model
    table = tuner.context_layer.weight
    learnt = torch.tensor([word_id(w) for w in ["fluffy", "striped", "animal", "bright", "wooden", "green"]])
    mixed_in = torch.tensor([word_id(w) for w in ["river", "house", "table", "stone", "cloud", "metal"]])
    with torch.no_grad():  # each learnt vector's nearest readable word is its word of `learnt`, at a cosine below 1
        tuner.context_layer.context["default"].copy_(0.75 * table[learnt] + 0.25 * table[mixed_in])
        tuner.ipl_assignment["default"].token_ids.copy_(torch.tensor([word_id("golden"), word_id("forest")]))
    encoded = []

    def recording(adapter_name, context, *args, **kwargs):
        encoded.append(original(adapter_name, context, *args, **kwargs))
        return encoded[-1]

    original = tuner._encode_classes
    with mock.patch.object(tuner, "_encode_classes", side_effect=recording):
        result = decoded_prompt_faithfulness(model, images, labels)
    # Decoded, the hybrid prompt is a plain sentence: the selected words in their slots between the learnt vectors' words
    sentences = [f"fluffy striped golden animal bright forest wooden green {name}." for name in CLASSES]
    with torch.no_grad():
        expected = model.get_base_model().get_text_features(**TOKENIZER(sentences, padding=True, return_tensors="pt"))
    expected = F.normalize(expected.pooler_output, dim=-1)
    assert len(encoded) == 2  # the learnt vectors, then their words
    torch.testing.assert_close(encoded[1], expected)
    image_embeds = tuner.encode_image(images)
    decoded_accuracy = ((image_embeds @ expected.T).argmax(-1) == labels).float().mean().item()
    with torch.no_grad():
        continuous_accuracy = (model(pixel_values=images).logits.argmax(-1) == labels).float().mean().item()
    assert (result.decoded_accuracy, result.continuous_accuracy) == (decoded_accuracy, continuous_accuracy)
    assert result.decoded_prompt == "[fluffy] [striped] golden [animal] [bright] forest [wooden] [green] {}."

    intcoop = hybrid(context_learner="intcoop", intcoop={"visual_prompt_depth": 1})
    with torch.no_grad():
        intcoop.base_model.ipl_assignment["default"].token_ids.copy_(torch.tensor([word_id("golden"), word_id("forest")]))
    decoded = decoded_prompt_faithfulness(intcoop, images, labels).decoded_prompt.split()
    assert decoded[2] == "golden" and decoded[5] == "forest" and decoded[-2:] == ["[attribute]", "{}."]
    assert " ".join(decoded) == intcoop.base_model.explain_prompt().decoded_prompt
