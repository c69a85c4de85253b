"""IPL over the deep-prompt learners (MaPLe, PromptSRC): the hybrid prompt ``[SOS] A_1 w_1 .. A_K w_K P <class>.``
through the text tower by hand, block by block, with the deep prompts taking over only the class context ``P``;
MaPLe's coupling of ``P`` to the vision prompts; selection, GPA, the trainer and saving end to end."""

import pytest
import torch
import torch.nn.functional as F
from peft import PeftModel, get_peft_model

from peft_interp import IPLConfig, MaPLeConfig
from peft_interp.data import load_clip_tokenizer
from peft_interp.training import InterpTrainer, TrainingArguments
from peft_interp.tuners.clip_prompt.model import TOKEN_EMBEDDING

from .test_clip_learners import TEMPLATES, hand_image_features, make_wide_clip, randomise

CLASSES = ["red-headed blue-bodied bird", "cat", "small dog"]
TOKENIZER = load_clip_tokenizer()
SOS, EOS = TOKENIZER.bos_token_id, TOKENIZER.eos_token_id
SETTINGS = {
    "maple": {"prompt_depth": 2},
    "promptsrc": {"text_prompt_depth": 2, "vision_prompt_depth": 2, "num_vision_tokens": 3, "teacher_templates": TEMPLATES},
}
# [SOS] A A w_1 A A w_2 P P P <class> . [EOS]: 7 learnt vectors, the class context P = rows 4..6 at positions 7..9
SOFT_POSITIONS, WORD_POSITIONS, P_POSITIONS = [1, 2, 4, 5, 7, 8, 9], [3, 6], [7, 8, 9]


def word_id(word: str) -> int:
    (token_id,) = TOKENIZER.encode(word, add_special_tokens=False)
    return token_id


WORDS = [word_id("striped"), word_id("bright")]


def ipl(learner: str, **overrides):
    """IPL over ``learner`` with a trained-looking adapter and the words "striped" and "bright" in the slots."""
    config = IPLConfig(class_names=CLASSES, context_learner=learner, learner_settings=SETTINGS[learner],
                       num_words=2, tokens_per_word=2, num_class_context_tokens=3, vocabulary_size=60, **overrides)  # fmt: skip
    model = get_peft_model(make_wide_clip(), config)
    randomise(model)
    with torch.no_grad():
        model.base_model.ipl_assignment["default"].token_ids.copy_(torch.tensor(WORDS))
    return model


def deep_text_prompts(model, learner: str) -> torch.Tensor:
    tuner = model.base_model
    return (tuner.maple_prompts if learner == "maple" else tuner.promptsrc_prompts)["default"].deep_text


def hand_text_features(clip, ids: list[int], input_rows: dict, deep_rows: list[dict], length: int = 77):
    """One 77-token prompt through the text tower block by block: the frozen token embeddings with ``input_rows``
    ``{position: (D,)}`` written in; before block ``j >= 1`` the hidden states at the positions of ``deep_rows[j - 1]``
    replaced, every other position keeping what block ``j - 1`` gave; causal mask; EOS pooling."""
    text_model = clip.text_model
    table = clip.get_submodule(TOKEN_EMBEDDING).get_base_layer().weight
    eos = len(ids) - 1
    hidden = table[torch.tensor(ids + [EOS] * (length - len(ids)))].clone()
    for position, row in input_rows.items():
        hidden[position] = row
    hidden = (hidden + text_model.embeddings.position_embedding.weight)[None]
    causal = torch.full((length, length), float("-inf")).triu(1)[None, None]
    for depth, block in enumerate(text_model.encoder.layers):
        if 1 <= depth <= len(deep_rows):
            hidden = hidden.clone()
            for position, row in deep_rows[depth - 1].items():
                hidden[0, position] = row
        hidden = block(hidden, causal)
    return F.normalize(clip.text_projection(text_model.final_layer_norm(hidden)[0, eos]), dim=-1)


def class_ids(name: str) -> list[int]:
    x = TOKENIZER.encode("X", add_special_tokens=False)[0]
    return [SOS, x, x, WORDS[0], x, x, WORDS[1], x, x, x, *TOKENIZER.encode(f"{name}.", add_special_tokens=False), EOS]


# ------------------------------------------------------------------------------------------------ the layout
@pytest.mark.parametrize("learner", ["maple", "promptsrc"])
def test_deep_prompts_take_over_only_the_class_context_and_text_features_match_a_hand_computation(learner, images):
    model = ipl(learner).eval()
    tuner = model.base_model
    config = model.peft_config["default"]
    context = tuner.context_layer.context["default"]  # (7, D): A_1 (rows 0-1), A_2 (2-3), P (4-6)
    deep = deep_text_prompts(model, learner)
    assert deep.shape == (1, 3, 32)  # J - 1 blocks x |P| tokens
    prompts = tuner.prompts("default")
    for row, name in enumerate(CLASSES):
        assert prompts.input_ids[row, : len(class_ids(name))].tolist() == class_ids(name)
    assert prompts.soft_mask[0].nonzero().squeeze(1).tolist() == SOFT_POSITIONS
    assert tuner._deep_prompt_mask(prompts, config)[0].nonzero().squeeze(1).tolist() == P_POSITIONS

    # the hidden states entering block 0 and block 1, as the model runs them
    blocks = tuner.model.text_model.encoder.layers
    seen = {}
    hooks = [blocks[depth].layer_norm1.register_forward_pre_hook(
        lambda module, args, depth=depth: seen.__setitem__(depth, args[0].detach().clone())) for depth in (0, 1)]  # fmt: skip
    hooks.append(blocks[0].register_forward_hook(lambda m, a, output: seen.__setitem__("out0", output.detach().clone())))
    with torch.no_grad():
        out = model(pixel_values=images)
    for hook in hooks:
        hook.remove()
    table = tuner.context_layer.get_base_layer().weight
    positions = tuner.model.text_model.embeddings.position_embedding.weight
    # block 0: learnt vectors at the soft positions, the words' frozen embeddings in their slots
    torch.testing.assert_close(seen[0][:, SOFT_POSITIONS], (context + positions[SOFT_POSITIONS]).expand(3, -1, -1))
    torch.testing.assert_close(seen[0][:, WORD_POSITIONS], (table[WORDS] + positions[WORD_POSITIONS]).expand(3, -1, -1))
    # block 1: the deep prompts at P; the words, the anchors A_k and the rest keep what block 0 gave
    torch.testing.assert_close(seen[1][:, P_POSITIONS], deep[0].expand(3, -1, -1))
    kept = [p for p in range(seen[1].shape[1]) if p not in P_POSITIONS]
    assert torch.equal(seen[1][:, kept], seen["out0"][:, kept])
    assert not torch.allclose(seen[1][:, WORD_POSITIONS], seen[0][:, WORD_POSITIONS])  # block 0 did change them

    with torch.no_grad():
        text = torch.stack([
            hand_text_features(tuner.model, class_ids(name), dict(zip(SOFT_POSITIONS, context)),
                               [dict(zip(P_POSITIONS, deep[0]))])
            for name in CLASSES
        ])  # fmt: skip
    torch.testing.assert_close(out.text_embeds, text, rtol=1e-5, atol=1e-5)


def test_maple_couples_the_class_context_to_the_vision_prompts(images, labels):
    model = ipl("maple")
    tuner = model.base_model
    context = tuner.context_layer.context["default"]
    prompts = tuner.maple_prompts["default"]
    vision = tuner.vision_prompts("default")
    assert vision.shape == (2, 3, 48)  # J x |P| x vision width
    for depth, text in enumerate([context[4:7], prompts.deep_text[0]]):  # F_0(P), F_1(T_1)
        layer = prompts.coupling[depth]
        torch.testing.assert_close(vision[depth], text @ layer.weight.T + layer.bias)
    with torch.no_grad():
        out = model.eval()(pixel_values=images)
        image = hand_image_features(tuner.model, images, vision)
    torch.testing.assert_close(out.image_embeds, image, rtol=1e-5, atol=1e-5)
    # the image loss reaches P and the deep prompts through the coupling, never the anchors A_k
    model.train()
    image_only = model(pixel_values=images, labels=labels).image_embeds.sum()
    image_only.backward()
    assert context.grad[4:].abs().sum() > 0 and prompts.deep_text.grad.abs().sum() > 0
    assert context.grad[:4].abs().sum() == 0


def test_promptsrc_keeps_its_self_regularisation_and_independent_vision_prompts(images, labels):
    model = ipl("promptsrc").train()
    tuner = model.base_model
    assert tuner.promptsrc_prompts["default"].vision.shape == (2, 3, 48)  # n_v is PromptSRC's own setting
    out = model(pixel_values=images, labels=labels)
    assert set(out.loss_terms) == {"classification", "image", "text", "logits"}
    with torch.no_grad():  # the prompted image tower: PromptSRC's vision prompts appended and replaced
        image = hand_image_features(tuner.model, images, tuner.promptsrc_prompts["default"].vision)
    torch.testing.assert_close(out.image_embeds, image, rtol=1e-5, atol=1e-5)


def test_without_ipl_the_deep_prompts_cover_the_whole_context():
    model = get_peft_model(make_wide_clip(), MaPLeConfig(class_names=CLASSES, prompt_depth=2, context_init=None))
    tuner = model.base_model
    prompts = tuner.prompts("default")
    assert torch.equal(tuner._deep_prompt_mask(prompts, model.peft_config["default"]), prompts.soft_mask)
    coverage = get_peft_model(make_wide_clip(), IPLConfig(class_names=CLASSES, context_learner="maple", variant=
                              "coverage_anchor", num_context_tokens=4, learner_settings=SETTINGS["maple"]))  # fmt: skip
    assert coverage.base_model.maple_prompts["default"].deep_text.shape == (1, 4, 32)  # no word slots: all 4 rows


# --------------------------------------------------------------------------------------- selection end to end
@pytest.mark.parametrize("learner", ["maple", "promptsrc"])
def test_selection_gpa_the_trainer_and_saving_end_to_end(tmp_path, learner):
    model = get_peft_model(make_wide_clip(), IPLConfig(class_names=CLASSES, context_learner=learner,
                                                       learner_settings=SETTINGS[learner], vocabulary_size=60))  # fmt: skip
    coop = get_peft_model(make_wide_clip(), IPLConfig(class_names=CLASSES, vocabulary_size=60))
    torch.manual_seed(0)
    rows = [{"pixel_values": torch.randn(3, 28, 28), "labels": torch.tensor(i % 3)} for i in range(6)]
    collate = lambda batch: {key: torch.stack([row[key] for row in batch]) for key in batch[0]}  # noqa: E731
    args = TrainingArguments(str(tmp_path / "run"), max_steps=4, batch_size=3, logging_steps=1, report_to=None)
    InterpTrainer(model, args, rows, collate, progress=False).train()  # 2 steps per epoch: a word in epochs 0 and 1
    tuner = model.base_model
    words = tuner.ipl_assignment["default"].token_ids
    assert tuner.ipl_assignment["default"].filled == 2
    assert tuner.prompts("default").input_ids[0, [3, 6]].tolist() == words.tolist()
    # the selection reads the frozen towers only: the same words as IPL over CoOp on the same images
    coop.base_model.set_selection_data(tuner.__dict__["_selection"]["default"].selector.image_embeds,
                                       torch.tensor([i % 3 for i in range(6)]), steps_per_epoch=1)  # fmt: skip
    coop.on_train_step_begin(1)
    assert torch.equal(coop.base_model.ipl_assignment["default"].token_ids, words)
    if learner == "promptsrc":  # GPA ran after both epochs
        assert tuner.promptsrc_gpa["default"].epochs.item() == 2
    model.eval()
    pixels = torch.stack([row["pixel_values"] for row in rows[:2]])
    logits, prompt = model(pixel_values=pixels).logits, model.explain_prompt().prompt
    reloaded = PeftModel.from_pretrained(make_wide_clip(), tmp_path / "run" / "adapter").eval()
    assert type(reloaded.base_model) is type(tuner)
    assert reloaded.explain_prompt().prompt == prompt == reloaded.peft_config["default"].readable_prompt
    assert torch.equal(reloaded(pixel_values=pixels).logits, logits)
