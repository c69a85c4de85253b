"""Which loss term reaches which parameter: for every term of IVPT, VPT-deep, CoOp, IntCoOp and DualViewMI alone,
the exact set of trainable parameters that get a non-zero gradient; every other parameter gets exactly none.

IVPT's routes are those of the official code (ThomasWangY/IVPT): every level's maps are computed on detached
features, so the map losses reach only the prototypes and spatial biases; prompts are built from detached
features and a detached grouping, so only the consistency loss trains the grouping linears; the classifier and
the orthogonality loss reach the prompts (and the CLS / position shift) through the backbone's output.
"""

from __future__ import annotations

import re

import pytest
import torch
from peft import get_peft_model

from peft_interp import CoOpConfig, DualViewMIConfig, IntCoOpConfig, IVPTConfig, VPTDeepConfig

from .tiny_models import make_backbone, make_clip

LEVELS = [f"encoder.layer.{i}.prompt_sources" for i in range(4)]  # the 4 prompted blocks of the tiny DINOv2


def short(name: str) -> str:
    """``base_model.model.encoder.layer.0.prompt_sources.default.grouping.weight`` ->
    ``encoder.layer.0.prompt_sources.grouping.weight``."""
    return re.sub(r"^base_model\.(model\.)?", "", name).replace(".default", "")


def routes(model, loss_terms: dict[str, torch.Tensor]) -> dict[str, set[str]]:
    """Per loss term alone: the trainable parameters with a non-zero gradient. Asserts that every other parameter
    (trainable or frozen) gets no gradient at all or an exactly zero one."""
    params = dict(model.named_parameters())
    result = {}
    for term, value in loss_terms.items():
        for param in params.values():
            param.grad = None
        value.backward(retain_graph=True)
        reached = {name for name, p in params.items() if p.grad is not None and torch.count_nonzero(p.grad) > 0}
        assert all(params[name].requires_grad for name in reached), term
        result[term] = {short(name) for name in reached}
    return result


def ivpt_parts(levels: list[str], *parts: str) -> set[str]:
    return {f"{level}.{part}" for level in levels for part in parts}


PROTOTYPES = ("concepts.prototypes", "concepts.spatial_bias")
HEAD_MAPS = {f"ivpt_head.{part}" for part in PROTOTYPES}
PROMPTS = ivpt_parts(LEVELS, "prompt_proj.weight", "prompt_proj.bias")
MAP_ROUTE = ivpt_parts(LEVELS, *PROTOTYPES) | HEAD_MAPS


@pytest.mark.parametrize("train_prompt_norm", [False, True])
def test_ivpt_every_loss_term_reaches_exactly_its_parameters(images, labels, train_prompt_norm):
    torch.manual_seed(0)
    model = get_peft_model(make_backbone("dinov2"), IVPTConfig(num_classes=3, train_prompt_norm=train_prompt_norm))
    out = model.train()(pixel_values=images, labels=labels)
    prompts = PROMPTS | (ivpt_parts(LEVELS, "prompt_norm.weight", "prompt_norm.bias") if train_prompt_norm else set())
    through_backbone = prompts | {"embeddings.token_shifts"}
    expected = {
        "classification": through_backbone | HEAD_MAPS | {f"ivpt_head.{p}" for p in
                                                          ("modulation.weight", "modulation.bias", "classifier.weight")},
        "consistency": ivpt_parts(LEVELS, *PROTOTYPES, "grouping.weight", "grouping.bias"),
        "presence": MAP_ROUTE,
        "background_presence": MAP_ROUTE,
        "total_variation": MAP_ROUTE,
        "pixel_entropy": MAP_ROUTE,
        "equivariance": MAP_ROUTE,
        "orthogonality": through_backbone | HEAD_MAPS | {"ivpt_head.modulation.weight", "ivpt_head.modulation.bias"},
    }  # fmt: skip
    found = routes(model, out.loss_terms)
    assert list(found) == list(expected)  # every term, in the reported order
    for term in expected:
        assert found[term] == expected[term], term
    trainable = {short(n) for n, p in model.named_parameters() if p.requires_grad}
    assert set().union(*found.values()) == trainable  # no trainable parameter is left out of every route


def test_ivpt_without_spatial_bias_or_token_shift_routes_the_rest_the_same(images, labels):
    torch.manual_seed(0)
    config = IVPTConfig(num_classes=3, spatial_bias="none", train_token_embeddings=False, num_prototypes=[6, 4, 3],
                        equivariance_weight=0.0)  # fmt: skip
    model = get_peft_model(make_backbone("dinov2"), config)
    found = routes(model, model.train()(pixel_values=images, labels=labels).loss_terms)
    levels = LEVELS[2:]  # the last two blocks
    assert "equivariance" not in found  # weight 0 skips the second pass
    assert found["consistency"] == ivpt_parts(levels, "concepts.prototypes", "grouping.weight", "grouping.bias")
    assert found["presence"] == ivpt_parts(levels, "concepts.prototypes") | {"ivpt_head.concepts.prototypes"}
    assert found["classification"] == ivpt_parts(levels, "prompt_proj.weight", "prompt_proj.bias") | {
        "ivpt_head.concepts.prototypes", "ivpt_head.modulation.weight", "ivpt_head.modulation.bias",
        "ivpt_head.classifier.weight",
    }  # fmt: skip


def test_vpt_deep_cross_entropy_reaches_every_prompt_the_head_and_the_shift(images, labels):
    torch.manual_seed(0)
    config = VPTDeepConfig(num_classes=3, num_prompted_layers=3, train_token_embeddings=True)
    model = get_peft_model(make_backbone("dinov2"), config)
    out = model.train()(pixel_values=images, labels=labels)
    found = routes(model, {"classification": out.loss})
    assert found["classification"] == {
        *(f"encoder.layer.{i}.prompt_sources.tokens" for i in (1, 2, 3)),
        "vpt_head.weight", "vpt_head.bias", "embeddings.token_shifts",
    }  # fmt: skip


# ---------------------------------------------------------------------------------------------- CLIP methods
CLASSES = ["cat", "red-headed bird", "small dog"]
CONTEXT = "text_model.embeddings.token_embedding.context"


def trained_looking(model):
    """Every adapter parameter perturbed (IntCoOp's zero-initialised attention output would hide the routes
    through the attention's input projections)."""
    torch.manual_seed(4)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param) * 0.1)
    return model


def test_coop_cross_entropy_reaches_only_the_context(images, labels):
    for class_specific in (False, True):
        model = get_peft_model(make_clip(), CoOpConfig(class_names=CLASSES, class_specific_context=class_specific))
        found = routes(model, model.train()(pixel_values=images, labels=labels).loss_terms)
        assert found == {"classification": {CONTEXT}}


INTCOOP_ATTENTION = {f"intcoop_conditioner.attention.{p}" for p in
                     ("q_proj_weight", "k_proj_weight", "v_proj_weight", "in_proj_bias", "out_proj.weight",
                      "out_proj.bias")}  # fmt: skip
INTCOOP_ATTRIBUTE = {f"intcoop_attribute.net.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")}
VISUAL_PROMPTS = {f"vision_model.encoder.layers.{i}.prompt_sources.tokens" for i in (0, 1)}


@pytest.mark.parametrize("trains_attribute", [True, False])
def test_intcoop_every_loss_term_reaches_exactly_its_parameters(images, labels, trains_attribute):
    """CE and L_reg reach everything that shapes the prompts (context, attention, attribute slot, visual prompts);
    L_attr reaches only the attribute extractor and the visual prompts under it. With
    ``classification_trains_attribute=False`` the attribute slot is detached in the prompts."""
    config = IntCoOpConfig(class_names=CLASSES, visual_prompt_depth=2, classification_trains_attribute=trains_attribute)
    model = trained_looking(get_peft_model(make_clip(), config)).train()
    out = model(pixel_values=images, labels=labels, attributes=["green", None, "fluffy", "red"])
    prompt_route = {CONTEXT} | INTCOOP_ATTENTION | VISUAL_PROMPTS | (INTCOOP_ATTRIBUTE if trains_attribute else set())
    expected = {
        "classification": prompt_route,
        "attribute": INTCOOP_ATTRIBUTE | VISUAL_PROMPTS,
        "regularization": prompt_route,
    }
    assert routes(model, out.loss_terms) == expected


def test_intcoop_without_visual_prompts_leaves_the_image_tower_out_of_every_route(images, labels):
    config = IntCoOpConfig(class_names=CLASSES, visual_prompt_depth=0, attribute_extractor="linear")
    model = trained_looking(get_peft_model(make_clip(), config)).train()
    out = model(pixel_values=images, labels=labels, attributes=["green", None, "fluffy", "red"])
    linear = {"intcoop_attribute.net.weight", "intcoop_attribute.net.bias"}
    assert routes(model, out.loss_terms) == {
        "classification": {CONTEXT} | INTCOOP_ATTENTION | linear,
        "attribute": linear,
        "regularization": {CONTEXT} | INTCOOP_ATTENTION | linear,
    }


@pytest.mark.parametrize("estimator", ["infonce", "bilinear_critic"])
def test_dualview_terms_reach_the_context_and_only_critic_scored_terms_reach_a_critic(images, labels, estimator):
    """Every DualViewMI term trains the context; cross-entropy reaches nothing else, and a learnt critic (if the
    estimator has one) learns from the two terms it scores: the mutual information between the views and the
    class-wise visual mixup (mixed image features matched to their class's soft prompt). The hand-crafted view is
    frozen."""
    model = get_peft_model(make_clip(), DualViewMIConfig(class_names=CLASSES, mi_estimator=estimator))
    found = routes(model, trained_looking(model).train()(pixel_values=images, labels=labels).loss_terms)
    critic = {short(n) for n, p in model.named_parameters() if p.requires_grad and "dualview_critic" in n}
    assert bool(critic) == (estimator == "bilinear_critic")
    assert found["classification"] == {CONTEXT}
    assert found["mutual_information"] == {CONTEXT} | critic
    assert model.peft_config["default"].augmentation == "visual_mixup"
    assert found["augmentation"] == {CONTEXT} | critic
    assert set(found) == {"classification", "mutual_information", "augmentation"}
