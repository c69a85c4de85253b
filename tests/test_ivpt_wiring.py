"""IVPT's model-level wiring against an independent computation from the block inputs: which features each level
reads (normalised, prefix tokens dropped), the channel order of the maps handed to the losses and to
``explain()``, the renormalisation, which maps feed which loss, the equivariance pass with a non-identity
transform (a quarter turn, so ``warp`` and ``unwarp`` cannot be confused), and the documented defaults."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from peft import get_peft_model

from peft_interp import IVPTConfig
from peft_interp.tuners.ivpt import losses
from peft_interp.tuners.layers import PromptedBlock
from peft_interp.tuners.recipe import IVPT_RECIPE

from .tiny_models import make_backbone

GRID = 4
PREFIX = 5  # CLS + 4 register tokens of the tiny DINOv2 with registers


def attention_by_hand(patches, prototypes, bias):
    """``softmax_k(-||e_l - p_k||^2 + b_kl)`` ``(B, K, L)`` from explicit distances."""
    distances = torch.cdist(patches, prototypes[None].expand(len(patches), -1, -1)).pow(2)  # (B, L, K)
    return (-distances.transpose(1, 2) + bias.flatten(1)).softmax(dim=1)


def renormalised(maps, eps):
    return (maps + eps) / (maps + eps).sum(dim=1, keepdim=True)


def grid(maps):
    return maps.unflatten(-1, (GRID, GRID))


def build(**overrides):
    torch.manual_seed(0)
    config = IVPTConfig(num_classes=3, num_prototypes=[9, 7, 5], **overrides)
    model = get_peft_model(make_backbone("dinov2_registers"), config)
    torch.manual_seed(1)
    with torch.no_grad():  # trained-looking spatial biases and token shift (zero at initialisation)
        for name, param in model.named_parameters():
            if name.endswith(("spatial_bias", "token_shifts.default")):
                param.normal_(0, 0.5)
    return model


def captured_forward(model, images):
    """Explanation, output and the inputs of every prompted block / the vision output, captured by hooks."""
    block_inputs, outputs = [], {}
    blocks = [m for m in model.modules() if isinstance(m, PromptedBlock)]
    hooks = [b.register_forward_pre_hook(lambda _, args: block_inputs.append(args[0].detach())) for b in blocks]
    vision = model.base_model.model
    hooks.append(vision.register_forward_hook(lambda _, __, out: outputs.update(last=out.last_hidden_state)))
    try:
        explanation = model.explain(images)
    finally:
        for hook in hooks:
            hook.remove()
    return explanation, block_inputs, outputs["last"].detach()


def test_maps_and_logits_equal_an_independent_computation(images, labels):
    eps = 0.01  # not the default 1e-6, so that a missing or doubled renormalisation shows
    model = build(map_renorm_eps=eps, presence_group_size=2, consistency_eps=1e-3).eval()
    explanation, block_inputs, last = captured_forward(model, images)
    assert len(block_inputs) == 2 and explanation.layer_names == ("encoder.layer.2", "encoder.layer.3", "head")
    tuner = model.base_model
    final_norm = tuner.model.layernorm
    attentions = []
    for q, (name, level) in enumerate(tuner._prompt_levels()):
        patches = final_norm(block_inputs[q][:, PREFIX:])
        attention = attention_by_hand(patches, level.concepts.prototypes, level.concepts.spatial_bias)
        attentions.append(attention)
        torch.testing.assert_close(explanation.level_maps[q], grid(renormalised(attention, eps)), msg=name)
        grouping = explanation.grouping[q]  # (B, K - 1, N)
        grouped = torch.cat([grouping.transpose(1, 2) @ attention[:, :-1], attention[:, -1:]], dim=1)
        torch.testing.assert_close(explanation.concept_maps[q], grid(grouped), msg=name)

    head = tuner.ivpt_head["default"]
    patches = last[:, PREFIX:]
    head_maps = renormalised(attention_by_hand(patches, head.concepts.prototypes, head.concepts.spatial_bias), eps)
    torch.testing.assert_close(explanation.level_maps[-1], grid(head_maps))
    torch.testing.assert_close(explanation.concept_maps[-1], grid(head_maps))
    hard = F.one_hot(head_maps.argmax(dim=1), head_maps.shape[1]).transpose(1, 2) * head_maps  # (B, K, L)
    features = head.modulation((hard @ patches) / hard.sum(-1, keepdim=True).clamp_min(1e-30))
    concept_logits = (features @ head.classifier.weight.T)[:, :-1].transpose(1, 2)  # background (last) dropped
    torch.testing.assert_close(explanation.concept_logits, concept_logits)
    torch.testing.assert_close(explanation.logits, concept_logits.mean(-1))

    out = model(pixel_values=images, labels=labels)
    level_maps = [grid(renormalised(a, eps)) for a in attentions] + [grid(head_maps)]
    unit = F.normalize(features, dim=-1)
    kl = [(head_maps * ((head_maps + 1e-3).log() - (grid_free + 1e-3).log())).sum(1).mean()
          for grid_free in [torch.cat([g.transpose(1, 2) @ a[:, :-1], a[:, -1:]], 1)
                            for g, a in zip(explanation.grouping, attentions)]]  # fmt: skip
    expected = {
        "classification": F.cross_entropy(concept_logits.mean(-1), labels),
        "consistency": torch.stack(kl).mean(),
        "presence": torch.stack([losses.presence_loss(m, 2) for m in level_maps]).mean(),
        "background_presence": torch.stack([losses.background_presence_loss(m) for m in level_maps]).mean(),
        "total_variation": torch.stack([losses.total_variation_loss(m) for m in level_maps]).mean(),
        "pixel_entropy": torch.stack([losses.pixel_entropy_loss(m) for m in level_maps]).mean(),
        "orthogonality": (unit @ unit.transpose(1, 2) - torch.eye(5)).pow(2).mean(),  # background included
    }
    assert list(out.loss_terms) == list(expected)
    for name, value in expected.items():
        torch.testing.assert_close(out.loss_terms[name], value, msg=name)


def test_map_channels_follow_the_prototype_order(images):
    """Swapping two prototypes (and their spatial biases) swaps exactly those channels of the maps; the background
    stays the last channel."""
    model = build().eval()
    before = model.explain(images)
    head = model.base_model.ivpt_head["default"].concepts
    with torch.no_grad():
        for param in (head.prototypes, head.spatial_bias):
            param[[0, 2]] = param[[2, 0]].clone()
    after = model.explain(images)
    torch.testing.assert_close(after.level_maps[-1], before.level_maps[-1][:, [2, 1, 0, 3, 4]])


def fake_quarter_turn(calls):
    """A stand-in for ``random_affine`` that records its arguments and returns an exact quarter turn."""
    warp = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0]])  # samples the image rotated by k=1 (rot90)
    unwarp = torch.tensor([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])

    def random_affine(batch_size, image_size, rotation, translation, scale, device=None, per_image=True):
        calls.append((batch_size, image_size, rotation, translation, scale, per_image))
        return warp.expand(batch_size, 2, 3), unwarp.expand(batch_size, 2, 3)

    return random_affine


def test_equivariance_maps_back_with_the_inverse_transform(images, labels, monkeypatch):
    calls = []
    monkeypatch.setattr(losses, "random_affine", fake_quarter_turn(calls))
    only = {f"{n}_weight": 0.0 for n in ("classification", "consistency", "presence", "background_presence",
                                         "total_variation", "pixel_entropy", "orthogonality")}  # fmt: skip
    model = build(grouping="softmax", equivariance_weight=0.7, **only)
    out = model.train()(pixel_values=images, labels=labels)
    assert calls == [(4, 28, 90.0, 0.11, (0.8, 1.4), False)]  # the official per-batch transform, config ranges

    model.eval()  # softmax grouping: eval maps are the training maps
    plain = model.explain(images).level_maps
    turned = model.explain(torch.rot90(images, k=1, dims=(2, 3))).level_maps
    back = [torch.rot90(maps, k=-1, dims=(2, 3)) for maps in turned]
    per_level = [1 - F.cosine_similarity(a[:, :-1].flatten(2), b[:, :-1].flatten(2), dim=-1).mean()
                 for a, b in zip(plain, back)]  # fmt: skip
    expected = torch.stack(per_level).mean()
    torch.testing.assert_close(out.loss_terms["equivariance"], expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.loss, 0.7 * expected, rtol=1e-4, atol=1e-5)
    wrong_way = torch.stack([1 - F.cosine_similarity(a[:, :-1].flatten(2), torch.rot90(b, k=1, dims=(2, 3))[:, :-1]
                             .flatten(2), dim=-1).mean() for a, b in zip(plain, turned)]).mean()  # fmt: skip
    assert abs(float(wrong_way) - float(expected)) > 1e-3  # the test can tell unwarp from warp


def test_per_image_transform_is_passed_on(images, labels, monkeypatch):
    calls = []
    monkeypatch.setattr(losses, "random_affine", fake_quarter_turn(calls))
    model = build(equivariance_transform="per_image", equivariance_rotation=30.0, equivariance_translation=0.2,
                  equivariance_scale=(0.9, 1.1))  # fmt: skip
    model.train()(pixel_values=images[:3], labels=labels[:3])
    assert calls == [(3, 28, 30.0, 0.2, (0.9, 1.1), True)]


@pytest.mark.parametrize("weight_name", ["classification", "consistency", "presence", "background_presence",
                                         "total_variation", "pixel_entropy", "equivariance", "orthogonality"])
def test_each_loss_weight_scales_only_its_own_term(images, labels, weight_name):
    """Every weight at a value where a mistake shows (not 1, not 0.5), the others at distinct values too: the loss
    is the sum written out, so a weight applied twice, to the wrong term or not at all changes it."""
    weights = dict(zip(["classification", "consistency", "presence", "background_presence", "total_variation",
                        "pixel_entropy", "equivariance", "orthogonality"], [1.3, 0.7, 2.1, 0.4, 1.7, 0.9, 0.6, 2.6]))
    weights[weight_name] = 3.7
    model = build(grouping="softmax", **{f"{name}_weight": value for name, value in weights.items()})
    out = model.train()(pixel_values=images, labels=labels)
    terms = out.loss_terms
    assert set(terms) == set(weights)
    expected = sum(weights[name] * terms[name] for name in weights)
    torch.testing.assert_close(out.loss, expected)


def test_documented_defaults():
    """The paper's / official code's settings, as the docstrings give them."""
    config = IVPTConfig(num_classes=3)
    assert config.num_prototypes == [17, 14, 11, 8, 5] and config.num_concepts == 4
    assert config.map_renorm_eps == 1e-6 and config.consistency_eps == 1e-10
    assert config.presence_group_size == 4 and config.equivariance_transform == "per_batch"
    assert (config.equivariance_rotation, config.equivariance_translation) == (90.0, 0.11)
    assert config.equivariance_scale == (0.8, 1.4)
    assert (config.grouping, config.gumbel_tau, config.gumbel_at_inference) == ("gumbel", 1.0, False)
    assert config.spatial_bias == "before_softmax" and config.train_token_embeddings and not config.train_prompt_norm
    assert config.prototype_init_std == 0.05
    assert all(getattr(config, f"{name}_weight") == 1.0 for name in (
        "classification", "consistency", "presence", "background_presence", "total_variation", "pixel_entropy",
        "equivariance", "orthogonality"))  # fmt: skip
    assert (config.learning_rate, config.prototype_learning_rate) == (1e-2, 2e-4)
    assert (IVPT_RECIPE.optimizer, IVPT_RECIPE.learning_rate, IVPT_RECIPE.scheduler) == ("adam", 1e-2, "step")
    assert (IVPT_RECIPE.step_size_epochs, IVPT_RECIPE.gamma, IVPT_RECIPE.epochs) == (4, 0.5, 25)
    assert (IVPT_RECIPE.batch_size, IVPT_RECIPE.max_grad_norm, IVPT_RECIPE.warmup_epochs) == (16, 2.0, 0.0)


def test_default_renormalisation_is_applied(images):
    """With the default eps the maps are ``(A + 1e-6) / sum``: no channel is exactly zero even where the raw
    attention underflows."""
    model = build().eval()
    head = model.base_model.ivpt_head["default"]
    with torch.no_grad():
        head.concepts.spatial_bias[0] = -1e4  # concept 0 is nowhere
    maps = model.explain(images).level_maps[-1]
    expected_floor = 1e-6 / (1 + 5e-6)
    torch.testing.assert_close(maps[:, 0], torch.full_like(maps[:, 0], expected_floor), rtol=1e-4, atol=0)


def test_part_maps_score_the_level_with_the_asked_number_of_prototypes(images):
    """``part_maps`` hands the part metrics the foreground maps of the level with ``num_prototypes`` prototypes
    (IVPT's evaluation: 11), the finest level when none has that many, and the final concept maps."""
    model = build().eval()  # levels of 9 and 7 prototypes, head of 5
    explanation = model.explain(images)
    for count, level in ((7, 1), (9, 0), (11, 0), (5, 0)):  # the head's level (5) is never a prototype level
        parts = model.base_model.part_maps(images, num_prototypes=count)
        torch.testing.assert_close(parts.prototype_maps, explanation.level_maps[level][:, :-1], msg=str(count))
    torch.testing.assert_close(parts.concept_maps, explanation.concept_maps[-1][:, :-1])
    torch.testing.assert_close(parts.logits, explanation.logits)
