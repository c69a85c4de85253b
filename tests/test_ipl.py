"""IPL's coverage_anchor variant: greedy selection against brute force, readable prompts, anchoring, save/load, CoOp
and IntCoOp learners. The default hybrid prompt is tested in test_ipl_hybrid.py."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from peft import PeftModel, get_peft_model

from peft_interp import IntCoOpConfig, IPLConfig
from peft_interp.data import load_clip_tokenizer
from peft_interp.tuners.ipl.model import IPLIntCoOpModel, IPLModel
from peft_interp.tuners.ipl.selection import cosine_matrix, greedy_select, selection_objective

from .tiny_models import make_clip

CLASSES = ["red-headed blue-bodied bird", "cat", "small dog"]


def brute_force(relevance, token_similarity, k, gamma, ordered, return_best=False):
    """The optimum of the selection objective over all k-subsets (all orders of them when `ordered`)."""
    candidates = range(relevance.shape[1])
    pool = itertools.permutations(candidates, k) if ordered else itertools.combinations(candidates, k)
    value, best = max((selection_objective(relevance, token_similarity, list(s), gamma), s) for s in pool)
    return (value, best) if return_best else value


@pytest.mark.parametrize("seed", range(20))
def test_greedy_is_within_one_minus_one_over_e_of_brute_force(seed):
    generator = torch.Generator().manual_seed(seed)
    context, embeddings = torch.randn(5, 6, generator=generator), torch.randn(9, 6, generator=generator)
    relevance, token_similarity = cosine_matrix(context, embeddings), cosine_matrix(embeddings, embeddings)
    picked, gains = greedy_select(relevance, F.normalize(embeddings, dim=-1), k=3, redundancy_weight=0.0)
    value = selection_objective(relevance, token_similarity, picked, 0.0)
    assert math.isclose(value, sum(gains), rel_tol=1e-5, abs_tol=1e-6)
    optimum = brute_force(relevance, token_similarity, 3, 0.0, ordered=False)
    assert value >= (1 - 1 / math.e) * optimum - 1e-6
    assert len(set(picked)) == 3


def naive_greedy(relevance, token_similarity, k, gamma):
    """Plain greedy: at each step score every remaining candidate with the objective itself; returns the gains."""
    picked, gains = [], []
    for _ in range(k):
        base = selection_objective(relevance, token_similarity, picked, gamma)
        remaining = [t for t in range(relevance.shape[1]) if t not in picked]
        scores = {t: selection_objective(relevance, token_similarity, picked + [t], gamma) - base for t in remaining}
        picked.append(max(scores, key=scores.get))
        gains.append(scores[picked[-1]])
    return gains


@pytest.mark.parametrize("seed", range(5))
def test_vectorised_greedy_makes_the_picks_of_plain_greedy(seed):
    generator = torch.Generator().manual_seed(seed)
    context, embeddings = torch.randn(6, 5, generator=generator), torch.randn(40, 5, generator=generator)
    relevance, similarity = cosine_matrix(context, embeddings), cosine_matrix(embeddings, embeddings)
    picked, gains = greedy_select(relevance, F.normalize(embeddings, dim=-1), 6, redundancy_weight=0.3)
    # same marginal gains at every step (picks may differ only between exactly tied candidates)
    torch.testing.assert_close(torch.tensor(gains), torch.tensor(naive_greedy(relevance, similarity, 6, 0.3)))
    assert len(set(picked)) == 6


def test_greedy_recovers_context_made_of_candidate_words_exactly():
    embeddings = torch.eye(6)[:, :6] + 0.01 * torch.arange(6.0)[:, None]
    context = embeddings[[4, 1, 3]]
    relevance, similarity = cosine_matrix(context, embeddings), cosine_matrix(embeddings, embeddings)
    picked, _ = greedy_select(relevance, F.normalize(embeddings, dim=-1), k=3, redundancy_weight=0.1)
    assert sorted(picked) == [1, 3, 4]
    _, best = brute_force(relevance, similarity, 3, 0.1, ordered=True, return_best=True)
    assert sorted(best) == sorted(picked)  # greedy finds the optimal set


def test_diversity_weight_trades_a_near_duplicate_for_a_distinct_token():
    # two context vectors; candidates 0 and 1 are near-duplicates close to both (1 covers more), 2 is distinct
    embeddings = torch.tensor([[1.0, 0.0, 0.0], [0.99, 0.14, 0.0], [0.0, 0.6, 0.8]])
    context = torch.tensor([[1.0, 0.05, 0.0], [0.9, 0.3, 0.3]])
    relevance, similarity = cosine_matrix(context, embeddings), cosine_matrix(embeddings, embeddings)
    without, _ = greedy_select(relevance, F.normalize(embeddings, dim=-1), k=2, redundancy_weight=0.0)
    with_diversity, _ = greedy_select(relevance, F.normalize(embeddings, dim=-1), k=2, redundancy_weight=1.0)
    assert without == [1, 0]  # 0 still adds a little coverage
    assert with_diversity == [1, 2]  # 0 would pay ~0.99 for being a near-duplicate of 1
    optimum = brute_force(relevance, similarity, 2, 0.0, ordered=False)
    assert math.isclose(selection_objective(relevance, similarity, without, 0.0), optimum, rel_tol=1e-6)
    # with the order-dependent penalty greedy is only approximately optimal ({0, 2} scores 1.90, greedy 1.85)
    optimum = brute_force(relevance, similarity, 2, 1.0, ordered=True)
    assert (1 - 1 / math.e) * optimum <= selection_objective(relevance, similarity, with_diversity, 1.0) < optimum


def test_selection_rejects_impossible_k():
    with pytest.raises(ValueError, match="k=5"):
        greedy_select(torch.rand(2, 3), torch.rand(3, 4), k=5, redundancy_weight=0.0)


def ipl(**overrides):
    overrides.setdefault("variant", "coverage_anchor")
    return get_peft_model(make_clip(), IPLConfig(class_names=CLASSES, **overrides))


def test_readable_prompt_is_made_of_whole_vocabulary_words():
    model = ipl(num_context_tokens=6, context_init=None)
    decoding = model.explain_prompt()
    tokenizer = load_clip_tokenizer()
    assert len(decoding.tokens) == 6 and decoding.prompt.endswith(" {}.")
    for word, token_id in zip(decoding.tokens, decoding.token_ids.tolist()):
        assert word.isalpha() and len(word) >= 3
        assert tokenizer.encode(word, add_special_tokens=False) == [token_id]  # one whole-word token
    assert not {"cat", "dog", "bird", "red", "small"} & set(decoding.tokens)  # class-name words excluded
    assert model.peft_config["default"].readable_prompt == decoding.prompt
    context = model.base_model.context_layer.context["default"]
    embeddings = model.base_model.context_layer.weight[decoding.token_ids]
    torch.testing.assert_close(decoding.distances, (context - embeddings).norm(dim=-1))


def test_each_position_gets_its_most_similar_selected_token():
    model = ipl(context_init=None)
    decoding = model.base_model.select_tokens()
    context = model.base_model.context_layer.context["default"]
    chosen = decoding.token_ids.unique()
    best = chosen[cosine_matrix(context, model.base_model.context_layer.weight[chosen]).argmax(dim=1)]
    assert torch.equal(decoding.token_ids, best)


def test_anchoring_pulls_the_context_toward_its_words(images, labels):
    def train(anchor_weight):
        model = ipl(context_init=None, anchor_weight=anchor_weight, selection_interval=1000)
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05)
        for step in range(15):
            model.on_train_step_begin(step)  # selects at step 0 only
            out = model(pixel_values=images, labels=labels)
            optimizer.zero_grad()
            out.loss.backward()
            optimizer.step()
        return model, out

    anchored, out = train(anchor_weight=10.0)
    assert set(out.loss_terms) == {"classification", "anchor"}
    free, _ = train(anchor_weight=0.0)
    start = ipl(context_init=None).explain_prompt().distances.mean()  # same seed: the same initial context
    assert anchored.explain_prompt().distances.mean() < 0.8 * start
    assert anchored.explain_prompt().distances.mean() < 0.8 * free.explain_prompt().distances.mean()


def test_no_anchor_before_the_first_selection(images, labels):
    out = ipl()(pixel_values=images, labels=labels)
    assert set(out.loss_terms) == {"classification"}


def test_selection_and_readable_prompt_survive_save_and_load(tmp_path, images):
    model = ipl(context_init=None)
    model.on_train_step_begin(0)
    expected = model.explain_prompt()
    logits = model(pixel_values=images).logits
    model.save_pretrained(tmp_path)
    reloaded = PeftModel.from_pretrained(make_clip(), tmp_path)
    assert reloaded.peft_config["default"].readable_prompt == expected.prompt
    assert torch.equal(reloaded.explain_prompt().token_ids, expected.token_ids)
    assert torch.equal(reloaded(pixel_values=images).logits, logits)


def test_ipl_config_errors():
    with pytest.raises(ValueError, match="`context_learner` must be one of \\['coop', 'intcoop', 'cocoop', 'kgcoop', 'maple', 'promptsrc'\\], got 'vpt'"):
        IPLConfig(class_names=CLASSES, context_learner="vpt")
    with pytest.raises(ValueError, match="`class_specific_context`"):
        IPLConfig(class_names=CLASSES, class_specific_context=True)


# ------------------------------------------------------------------------------------------ IntCoOp context learner
INTCOOP = {"visual_prompt_depth": 2}  # of the tiny model's 4 vision blocks
ATTRIBUTES = ["green", None, "striped", "fluffy"]  # one per image of the `images` fixture


@pytest.fixture
def one_thread():
    """Tiny models on a shared 2-core machine: one thread avoids thread-pool contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def ipl_intcoop(**overrides):
    """IPL over IntCoOp with a trained-looking adapter: random context, non-zero attention output (same every call)."""
    model = ipl(context_learner="intcoop", intcoop=INTCOOP, context_init=None, **overrides)
    torch.manual_seed(3)
    with torch.no_grad():
        model.base_model.intcoop_conditioner["default"].attention.out_proj.weight.normal_(0, 0.3)
    return model


def plain_intcoop_like(model):
    """An IntCoOpModel with the same settings and every parameter of ``model`` copied (all but IPL's selection)."""
    config = model.peft_config["default"]
    plain = get_peft_model(make_clip(), IntCoOpConfig(class_names=CLASSES, context_init=None, **INTCOOP))
    result = plain.load_state_dict(model.state_dict(), strict=False)
    assert result.missing_keys == [] and result.unexpected_keys == ["base_model.ipl_assignment.default.token_ids"]
    assert config.regularization_weight == plain.peft_config["default"].regularization_weight  # IntCoOp's defaults
    return plain


def test_context_learner_picks_the_model_class_under_one_peft_type():
    coop, intcoop = ipl(), ipl_intcoop()
    assert type(coop.base_model) is IPLModel and type(intcoop.base_model) is IPLIntCoOpModel
    assert isinstance(intcoop.base_model, IPLModel)
    assert coop.peft_config["default"].peft_type == intcoop.peft_config["default"].peft_type
    with pytest.raises(ValueError, match="`context_learner`='coop'"):
        coop.add_adapter("other", IPLConfig(class_names=CLASSES, context_learner="intcoop", intcoop=INTCOOP,
                                            variant="coverage_anchor"))


def test_intcoop_learner_is_intcoop_until_selection_then_adds_the_anchor(one_thread, images, labels):
    model = ipl_intcoop(anchor_weight=2.5)
    plain = plain_intcoop_like(model)
    out = model(pixel_values=images, labels=labels, attributes=ATTRIBUTES)
    reference = plain(pixel_values=images, labels=labels, attributes=ATTRIBUTES)
    # instance-conditioned: every image has its own class prompts, and IPL adds nothing before the first selection
    assert out.text_embeds.shape == (4, len(CLASSES), 16)
    assert not torch.allclose(out.text_embeds[0], out.text_embeds[1])
    assert torch.equal(out.logits, reference.logits) and torch.equal(out.loss, reference.loss)
    with torch.no_grad():  # the image-conditioned offsets of the context are in force
        attention = model.base_model.intcoop_conditioner["default"].attention.out_proj
        saved = attention.weight.clone()
        attention.weight.zero_()
        assert not torch.allclose(model(pixel_values=images).logits, out.logits)
        attention.weight.copy_(saved)
    assert set(out.loss_terms) == {"classification", "attribute", "regularization"}
    torch.testing.assert_close(model(pixel_values=images[1:2]).logits, out.logits[1:2])  # one image alone

    model.on_train_step_begin(0)  # selection: the anchors enter the loss only, the prompts are unchanged
    out = model(pixel_values=images, labels=labels, attributes=ATTRIBUTES)
    assert torch.equal(out.logits, reference.logits)
    context = model.base_model.context_layer.context["default"]
    words = model.base_model.context_layer.weight[model.base_model.ipl_assignment["default"].token_ids]
    anchor = (context - words).pow(2).sum(dim=-1).mean()  # mean squared distance to the selected words
    torch.testing.assert_close(out.loss_terms["anchor"], anchor)
    assert set(out.loss_terms) == {"anchor", *reference.loss_terms}
    assert all(torch.equal(out.loss_terms[name], value) for name, value in reference.loss_terms.items())
    torch.testing.assert_close(out.loss, reference.loss + 2.5 * anchor)


def test_intcoop_learner_selects_whole_readable_words_for_the_shared_context():
    model = ipl_intcoop(num_context_tokens=6)
    decoding = model.explain_prompt()
    tokenizer = load_clip_tokenizer()
    assert len(decoding.tokens) == 6 and decoding.prompt == " ".join(decoding.tokens) + " [attribute] {}."
    for word, token_id in zip(decoding.tokens, decoding.token_ids.tolist()):
        assert word.isalpha() and len(word) >= 3
        assert tokenizer.encode(word, add_special_tokens=False) == [token_id]  # one whole-word token
    assert not {"cat", "dog", "bird", "red", "small"} & set(decoding.tokens)  # class-name words excluded
    context = model.base_model.context_layer.context["default"]  # the shared vectors, before conditioning
    chosen = decoding.token_ids.unique()
    best = chosen[cosine_matrix(context, model.base_model.context_layer.weight[chosen]).argmax(dim=1)]
    assert torch.equal(decoding.token_ids, best)
    assert model.peft_config["default"].readable_prompt == decoding.prompt
    assert len(model.explain(torch.randn(1, 3, 28, 28)).attribute_words[0]) == 5  # IntCoOp's explanation still works


def test_intcoop_learner_gradients_reach_exactly_the_adapter_parameters(one_thread, images, labels):
    model = ipl_intcoop(anchor_weight=3.0)
    plain = plain_intcoop_like(model)
    model.on_train_step_begin(0)
    model(pixel_values=images, labels=labels, attributes=ATTRIBUTES).loss.backward()
    plain(pixel_values=images, labels=labels, attributes=ATTRIBUTES).loss.backward()
    with_grad = {name for name, param in model.named_parameters() if param.grad is not None}
    trainable = {name for name, param in model.named_parameters() if param.requires_grad}
    assert with_grad == trainable
    assert {name.split(".default")[0].rsplit(".", 1)[-1] for name in trainable} == {
        "context", "prompt_sources", "intcoop_conditioner", "intcoop_attribute"
    }  # fmt: skip
    # IntCoOp's gradients, plus the anchor's on the shared context only
    plain_grads = dict(plain.named_parameters())
    tuner = model.base_model
    context = tuner.context_layer.context["default"]
    words = tuner.context_layer.weight[tuner.ipl_assignment["default"].token_ids]
    anchor_grad = 3.0 * 2 * (context - words).detach() / len(context)
    for name in trainable:
        expected = plain_grads[name].grad + (anchor_grad if name.endswith("context.default") else 0)
        torch.testing.assert_close(dict(model.named_parameters())[name].grad, expected)


def test_intcoop_learner_survives_save_and_load_exactly(one_thread, tmp_path, images, labels):
    model = ipl_intcoop(selection_interval=2)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for step in range(3):  # selections at steps 0 and 2
        model.on_train_step_begin(step)
        optimizer.zero_grad()
        model(pixel_values=images, labels=labels, attributes=ATTRIBUTES).loss.backward()
        optimizer.step()
    expected, logits = model.explain_prompt(), model(pixel_values=images).logits
    model.save_pretrained(tmp_path)
    reloaded = PeftModel.from_pretrained(make_clip(), tmp_path)
    assert type(reloaded.base_model) is IPLIntCoOpModel
    config = reloaded.peft_config["default"]
    assert config.context_learner == "intcoop" and config.intcoop == INTCOOP and config.visual_prompt_depth == 2
    assert config.readable_prompt == expected.prompt
    assert torch.equal(reloaded.explain_prompt().token_ids, expected.token_ids)
    assert torch.equal(reloaded(pixel_values=images).logits, logits)


def test_intcoop_settings_errors():
    with pytest.raises(ValueError, match="`intcoop` settings need `context_learner='intcoop'`"):
        IPLConfig(class_names=CLASSES, intcoop=INTCOOP)
    with pytest.raises(ValueError, match="unknown settings \\['depth'\\]; valid ones: \\['visual_prompt_depth'"):
        IPLConfig(class_names=CLASSES, context_learner="intcoop", intcoop={"depth": 2})
    with pytest.raises(ValueError, match="prompt fields \\['num_context_tokens'\\]"):
        IPLConfig(class_names=CLASSES, context_learner="intcoop", intcoop={"num_context_tokens": 2})
    with pytest.raises(ValueError, match="context_learner='intcoop': `conditioning` must be one of"):
        IPLConfig(class_names=CLASSES, context_learner="intcoop", intcoop={"conditioning": "gated"})
    with pytest.raises(ValueError, match="`cache_image_features` must be False for IntCoOp"):
        IPLConfig(class_names=CLASSES, context_learner="intcoop", cache_image_features=True)
