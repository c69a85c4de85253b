"""DualViewMI: MI estimator vs an independent computation, class-wise augmentation, inference rules, save/load."""

import math

import pytest
import torch
import torch.nn.functional as F
from peft import PeftModel, get_peft_model

from peft_interp import DualViewMIConfig
from peft_interp.tuners.dualview_mi.layer import (
    MLPCritic,
    feature_mixup_loss,
    infonce_from_scores,
    infonce_mi_loss,
    mi_lower_bound,
    prompt_mixup_loss,
    same_class_partners,
    visual_mixup,
)

from .tiny_models import make_clip

CLASSES = ["cat", "small dog", "owl", "red fox"]
GEN = torch.Generator().manual_seed(0)


def unit(*shape):
    return F.normalize(torch.randn(*shape, generator=GEN, dtype=torch.float64), dim=-1)


def test_infonce_matches_explicit_sums():
    soft, hand, critic = unit(5, 8), unit(5, 8), torch.randn(8, 8, generator=GEN, dtype=torch.float64)
    tau = 0.07
    for weight in (None, critic):
        scores = [[float((soft[i] @ (weight if weight is not None else torch.eye(8, dtype=torch.float64)) @ hand[j]) / tau)
                   for j in range(5)] for i in range(5)]  # fmt: skip
        forward = -sum(scores[i][i] - math.log(sum(math.exp(s) for s in scores[i])) for i in range(5)) / 5
        backward = -sum(scores[j][j] - math.log(sum(math.exp(scores[i][j]) for i in range(5))) for j in range(5)) / 5
        expected = torch.tensor((forward + backward) / 2, dtype=torch.float64)
        torch.testing.assert_close(infonce_mi_loss(soft, hand, tau, weight), expected)


def test_mi_bound_is_higher_for_aligned_views_than_shuffled():
    views = unit(16, 32)
    aligned = mi_lower_bound(infonce_mi_loss(views, views, 0.07), 16)
    shuffled = mi_lower_bound(infonce_mi_loss(views, views[torch.randperm(16, generator=GEN)], 0.07), 16)
    assert shuffled < aligned <= math.log(16) + 1e-9
    assert aligned > 0.9 * math.log(16)


def test_partners_are_always_of_the_same_class_and_differ_when_possible():
    labels = torch.tensor([0, 1, 0, 2, 1, 0, 3, 3])
    for _ in range(20):
        partners = same_class_partners(labels)
        assert torch.equal(labels[partners], labels)
        alone = torch.tensor([(labels == label).sum() == 1 for label in labels])
        assert torch.equal(partners == torch.arange(8), alone)


def test_augmentations_only_mix_samples_of_one_class():
    soft, hand, images = unit(4, 8), unit(4, 8), unit(6, 8)
    labels = torch.tensor([0, 0, 1, 2, 2, 2])
    lam = torch.full((6,), 0.7, dtype=torch.float64)
    mixed = F.normalize(0.7 * soft[labels] + 0.3 * images, dim=-1)  # own class prompt + own image
    torch.testing.assert_close(prompt_mixup_loss(soft, hand, images, labels, lam, 0.07),
                               F.cross_entropy(mixed @ hand.T / 0.07, labels))  # fmt: skip
    # feature mixup: each image mixed with the same-class partner drawn by same_class_partners
    torch.manual_seed(3)
    partners = same_class_partners(labels)
    assert torch.equal(labels[partners], labels)
    expected = F.cross_entropy(10.0 * F.normalize(0.7 * images + 0.3 * images[partners], dim=-1) @ soft.T, labels)
    torch.manual_seed(3)
    torch.testing.assert_close(feature_mixup_loss(soft, images, labels, lam, 10.0), expected)


def dualview(**overrides):
    return get_peft_model(make_clip(), DualViewMIConfig(class_names=CLASSES, **overrides))


def test_views_coincide_at_initialisation_and_losses_are_reported(images, labels):
    model = dualview()
    views = model.explain_views()
    torch.testing.assert_close(views.view_similarity, torch.ones(4), atol=1e-5, rtol=0)  # "a photo of a" both ways
    assert len(views.context.tokens) == 4 and views.mi_lower_bound > 0
    out = model.train()(pixel_values=images, labels=labels)
    assert set(out.loss_terms) == {"classification", "mutual_information", "augmentation"}
    torch.testing.assert_close(out.loss, out.loss_terms["classification"] + out.loss_terms["mutual_information"]
                               + 0.5 * out.loss_terms["augmentation"])  # fmt: skip


@pytest.mark.parametrize("estimator", ["mlp_critic", "infonce", "bilinear_critic"])
@pytest.mark.parametrize("augmentation", ["visual_mixup", "feature_mixup"])
def test_gradients_reach_exactly_the_adapter(images, labels, estimator, augmentation):
    model = dualview(mi_estimator=estimator, augmentation=augmentation).train()
    if estimator == "mlp_critic":  # a trained-looking critic: its output layer starts at zero
        torch.nn.init.normal_(model.base_model.dualview_critic["default"].out.weight, std=0.5)
    model(pixel_values=images, labels=labels).loss.backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_grad == trainable
    assert any("dualview_critic" in n for n in trainable) == (estimator != "infonce")


def test_inference_rules(images):
    soft_model = dualview().eval()
    with torch.no_grad():
        soft_model.base_model.context_layer.context["default"].normal_()
    out = soft_model(pixel_values=images)
    hand = soft_model.base_model.hand_crafted_features("default")
    scale = soft_model.base_model.model.logit_scale.exp()
    config = soft_model.peft_config["default"]
    config.inference = "late_fusion"
    torch.testing.assert_close(soft_model(pixel_values=images).logits, 0.5 * out.logits + 0.5 * scale * out.image_embeds @ hand.T)
    config.inference = "average"
    expected = scale * out.image_embeds @ F.normalize(out.text_embeds + hand, dim=-1).T
    torch.testing.assert_close(soft_model(pixel_values=images).logits, expected)


def test_template_ensemble_is_the_normalised_mean(images):
    model = dualview(templates=["a photo of a {}.", "a drawing of a {}."])
    tuner = model.base_model
    expected = F.normalize(tuner.zero_shot_text_features(CLASSES, "a photo of a {}.")
                           + tuner.zero_shot_text_features(CLASSES, "a drawing of a {}."), dim=-1)  # fmt: skip
    torch.testing.assert_close(tuner.hand_crafted_features("default"), expected)


def test_save_and_reload_exact(tmp_path, images, labels):
    model = dualview(mi_estimator="bilinear_critic")
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(2):
        optimizer.zero_grad()
        model.train()(pixel_values=images, labels=labels).loss.backward()
        optimizer.step()
    model.eval()
    expected = model(pixel_values=images).logits
    model.save_pretrained(tmp_path)
    reloaded = PeftModel.from_pretrained(make_clip(), tmp_path).eval()
    assert torch.equal(reloaded(pixel_values=images).logits, expected)
    assert torch.equal(reloaded.base_model.dualview_critic["default"].weight, model.base_model.dualview_critic["default"].weight)


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="`mi_estimator` must be one of \\['mlp_critic', 'infonce', 'bilinear_critic'\\]"):
        DualViewMIConfig(class_names=CLASSES, mi_estimator="mine")
    with pytest.raises(ValueError, match="`augmentation`"):
        DualViewMIConfig(class_names=CLASSES, augmentation="cutmix")
    with pytest.raises(ValueError, match="`critic_hidden_size` must be a positive int, got 0"):
        DualViewMIConfig(class_names=CLASSES, critic_hidden_size=0)
    with pytest.raises(ValueError, match="`templates`"):
        DualViewMIConfig(class_names=CLASSES, templates=["no slot"])


def critic_by_hand(critic: MLPCritic, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """T(a_i, b_j) one pair at a time from the critic's weights: a.b / tau + w2 . gelu(W [a; b; a * b] + b1) + b2."""
    weight = torch.cat([critic.left.weight, critic.right.weight, critic.product.weight], dim=1)  # (H, 3P)
    rows = []
    for i in range(len(a)):
        row = []
        for j in range(len(b)):
            pair = torch.cat([a[i], b[j], a[i] * b[j]])
            hidden = F.gelu(weight @ pair + critic.left.bias)
            row.append(a[i] @ b[j] / critic.temperature + critic.out.weight[0] @ hidden + critic.out.bias[0])
        rows.append(torch.stack(row))
    return torch.stack(rows)


def test_mlp_critic_scores_and_its_mi_bound_match_a_hand_computation():
    torch.manual_seed(0)
    critic = MLPCritic(8, 6, temperature=0.1).double()
    soft, hand = unit(5, 8), unit(5, 8)
    # at initialisation (zero output layer) it is the parameter-free cosine critic
    torch.testing.assert_close(critic(soft, hand), soft @ hand.T / 0.1)
    torch.nn.init.normal_(critic.out.weight, std=1.0)
    torch.nn.init.normal_(critic.out.bias, std=1.0)
    scores = critic_by_hand(critic, soft, hand)
    torch.testing.assert_close(critic(soft, hand), scores)
    # InfoNCE with this critic, both directions, from explicit sums; the bound is log C - L
    s = scores.tolist()
    forward = -sum(s[i][i] - math.log(sum(math.exp(v) for v in s[i])) for i in range(5)) / 5
    backward = -sum(s[j][j] - math.log(sum(math.exp(s[i][j]) for i in range(5))) for j in range(5)) / 5
    loss = infonce_from_scores(critic(soft, hand))
    torch.testing.assert_close(loss, torch.tensor((forward + backward) / 2, dtype=torch.float64))
    torch.testing.assert_close(mi_lower_bound(loss, 5), math.log(5) - loss)


def test_training_the_critic_tightens_the_bound():
    torch.manual_seed(1)
    soft = unit(8, 8)
    hand = F.normalize(soft.flip(-1) + 0.3 * unit(8, 8), dim=-1)  # dependent views, but not by cosine
    critic = MLPCritic(8, 32, temperature=1.0).double()
    before = mi_lower_bound(infonce_from_scores(critic(soft, hand)), 8).item()
    optimizer = torch.optim.Adam(critic.parameters(), lr=0.01)
    for _ in range(200):
        optimizer.zero_grad()
        infonce_from_scores(critic(soft, hand)).backward()
        optimizer.step()
    after = mi_lower_bound(infonce_from_scores(critic(soft, hand)), 8).item()
    assert before < 0.5 * math.log(8) < after <= math.log(8)


def test_visual_mixup_mixes_same_class_images_and_the_critic_scores_them(images, labels):
    model = dualview()  # the defaults: MLP critic, visual mixup
    config = model.peft_config["default"]
    assert (config.mi_estimator, config.augmentation) == ("mlp_critic", "visual_mixup")
    tuner = model.base_model
    critic = tuner.dualview_critic["default"]
    torch.nn.init.normal_(critic.out.weight, std=0.5)
    batch_labels = torch.tensor([0, 2, 0, 2])
    torch.manual_seed(5)
    out = model.train()(pixel_values=images, labels=batch_labels)
    # replay the same random draws: lam (Beta(1, 1), folded), then the partners
    torch.manual_seed(5)
    lam = torch.distributions.Beta(1.0, 1.0).sample((4,))
    lam = torch.maximum(lam, 1 - lam)
    partners = same_class_partners(batch_labels)
    assert torch.equal(partners, torch.tensor([2, 3, 0, 1]))  # the only other image of each class
    f = out.image_embeds
    mixed = torch.stack([F.normalize(lam[i] * f[i] + (1 - lam[i]) * f[partners[i]], dim=0) for i in range(4)])
    torch.manual_seed(5)
    torch.distributions.Beta(1.0, 1.0).sample((4,))  # the draw of lam, then visual_mixup draws the partners
    torch.testing.assert_close(visual_mixup(f, batch_labels, lam), mixed)
    with torch.no_grad():
        scores = critic_by_hand(critic, mixed, out.text_embeds)
        expected = F.cross_entropy(scores, batch_labels)
        mi = infonce_from_scores(critic_by_hand(critic, out.text_embeds, tuner.hand_crafted_features("default")))
    torch.testing.assert_close(out.loss_terms["augmentation"], expected)
    torch.testing.assert_close(out.loss_terms["mutual_information"], mi)
