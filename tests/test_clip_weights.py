"""Loss and fusion weights of the CLIP methods at values where a mistake shows (a weight applied twice, swapped or
dropped is invisible at 1.0), each total against the sum written out from the reported terms, and the auxiliary
terms against their formulas."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from peft import get_peft_model

from peft_interp import CoOpConfig, DualViewMIConfig, IntCoOpConfig

from .tiny_models import make_clip

CLASSES = ["cat", "red-headed bird", "small dog"]
ATTRIBUTES = ["green", None, "fluffy", "red"]


def trained_looking(model, seed=4):
    torch.manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param) * 0.1)
    return model


def test_dualview_total_is_ce_plus_each_weighted_term(images, labels):
    config = DualViewMIConfig(class_names=CLASSES, mi_weight=1.7, augmentation_weight=0.3, mi_temperature=0.2)
    model = trained_looking(get_peft_model(make_clip(), config)).train()
    out = model(pixel_values=images, labels=labels)
    terms = out.loss_terms
    assert {"classification", "mutual_information"} <= set(terms)
    weights = {"classification": 1.0, "mutual_information": 1.7, "augmentation": 0.3}
    torch.testing.assert_close(out.loss, sum(weights[name] * value for name, value in terms.items()))
    torch.testing.assert_close(terms["classification"], F.cross_entropy(out.logits, labels))


def test_dualview_late_fusion_weight_mixes_the_soft_and_the_zero_shot_logits(images):
    """``fusion_weight * soft + (1 - fusion_weight) * hand-crafted``: the soft logits from a model of the same
    context with ``inference="soft"``, the hand-crafted ones from the same model with adapters disabled (one
    template: the hand-crafted view is zero-shot CLIP)."""
    fused = trained_looking(get_peft_model(make_clip(), DualViewMIConfig(
        class_names=CLASSES, inference="late_fusion", fusion_weight=0.3))).eval()  # fmt: skip
    soft = trained_looking(get_peft_model(make_clip(), DualViewMIConfig(class_names=CLASSES, inference="soft"))).eval()
    with torch.no_grad():
        with fused.disable_adapter():
            zero_shot = fused(pixel_values=images).logits
        expected = 0.3 * soft(pixel_values=images).logits + 0.7 * zero_shot
        torch.testing.assert_close(fused(pixel_values=images).logits, expected)
        fused.train()  # training logits are the soft view's: the fusion is an inference rule
        torch.testing.assert_close(fused(pixel_values=images).logits, soft(pixel_values=images).logits)


def test_intcoop_total_and_terms_with_non_default_weights(images, labels):
    config = IntCoOpConfig(class_names=CLASSES, visual_prompt_depth=1, attribute_loss_weight=0.3,
                           regularization_weight=2.5, attribute_loss="l1", regularization_distance="cosine")  # fmt: skip
    model = trained_looking(get_peft_model(make_clip(), config)).train()
    out = model(pixel_values=images, labels=labels, attributes=ATTRIBUTES)
    terms = out.loss_terms
    torch.testing.assert_close(
        out.loss, terms["classification"] + 0.3 * terms["attribute"] + 2.5 * terms["regularization"]
    )
    tuner = model.base_model
    with torch.no_grad():
        pooled = tuner.image_features(images)[1]
        predicted = tuner.intcoop_attribute["default"](pooled)
        table = tuner.context_layer.weight
        tokenizer = tuner.tokenizer()
        rows = [i for i, word in enumerate(ATTRIBUTES) if word]
        targets = torch.stack([table[tokenizer.encode(ATTRIBUTES[i], add_special_tokens=False)].mean(0) for i in rows])
        reference = torch.stack([
            tuner.zero_shot_text_features(CLASSES, f"a photo of a {w} {{}}." if w else "a photo of a {}.")
            for w in ATTRIBUTES
        ])  # fmt: skip
    torch.testing.assert_close(terms["attribute"], (predicted[rows] - targets).abs().mean())
    torch.testing.assert_close(terms["regularization"], (1 - (out.text_embeds * reference).sum(-1)).mean())
    torch.testing.assert_close(terms["classification"], F.cross_entropy(out.logits, labels))


def test_intcoop_cosine_attribute_distance(images, labels):
    config = IntCoOpConfig(class_names=CLASSES, visual_prompt_depth=0, attribute_loss="cosine",
                           regularization_weight=0.0)  # fmt: skip
    model = trained_looking(get_peft_model(make_clip(), config)).train()
    out = model(pixel_values=images, labels=labels, attributes=ATTRIBUTES)
    assert set(out.loss_terms) == {"classification", "attribute"}  # weight 0 drops L_reg
    tuner = model.base_model
    with torch.no_grad():
        predicted = tuner.intcoop_attribute["default"](tuner.image_features(images)[1])
        rows = [0, 2, 3]
        targets = torch.stack([tuner.attribute_embedding(ATTRIBUTES[i]) for i in rows])
    expected = (1 - F.cosine_similarity(predicted[rows], targets, dim=-1)).mean()
    torch.testing.assert_close(out.loss_terms["attribute"], expected)
    torch.testing.assert_close(out.loss, out.loss_terms["classification"] + expected)


def test_coop_logits_use_the_learnt_temperature(images):
    """``logit_scale.exp() * cos``: a logit scale other than CLIP's initial one shows a missing or doubled exp."""
    model = trained_looking(get_peft_model(make_clip(), CoOpConfig(class_names=CLASSES))).eval()
    with torch.no_grad():
        model.base_model.model.logit_scale.fill_(1.5)
        out = model(pixel_values=images)
    torch.testing.assert_close(out.logits, torch.exp(torch.tensor(1.5)) * out.image_embeds @ out.text_embeds.T)
    torch.testing.assert_close(out.image_embeds.norm(dim=-1), torch.ones(4))
    torch.testing.assert_close(out.text_embeds.norm(dim=-1), torch.ones(3))


def test_coop_documented_defaults():
    """CoOp / CoCoOp base-to-novel defaults and the CoOp family's training protocol, as the docstrings give them."""
    config = CoOpConfig(class_names=CLASSES)
    assert (config.num_context_tokens, config.context_init, config.template) == (4, "a photo of a", "a photo of a {}.")
    assert not config.class_specific_context and not config.cache_image_features and config.learning_rate == 0.002
    from peft_interp.tuners.recipe import COOP_RECIPE

    assert (COOP_RECIPE.optimizer, COOP_RECIPE.learning_rate, COOP_RECIPE.momentum) == ("sgd", 0.002, 0.9)
    assert (COOP_RECIPE.weight_decay, COOP_RECIPE.scheduler, COOP_RECIPE.warmup_epochs) == (5e-4, "cosine", 1)
    assert (COOP_RECIPE.warmup_learning_rate, COOP_RECIPE.batch_size) == (1e-5, 32)
    model = get_peft_model(make_clip(), CoOpConfig(class_names=CLASSES, learning_rate=0.01))
    assert model.base_model.training_recipe().learning_rate == 0.01  # the config's rate overrides the recipe's
