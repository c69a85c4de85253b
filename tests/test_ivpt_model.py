"""IVPT as a PEFT model: outputs, trainability, gradient paths, PEFT behaviour, validation."""

import copy

import pytest
import torch
from peft import get_peft_model
from transformers import Dinov2Config, Dinov2Model

from peft_interp import IVPTConfig, VPTDeepConfig
from peft_interp.tuners.ivpt.layer import IVPTPromptLevel
from peft_interp.tuners.layers import InterpLayer

from .tiny_models import BACKBONES, IMAGE_SIZE, VIT, make_backbone

GRID = IMAGE_SIZE // 7


def ivpt(kind="dinov2", **overrides):
    config = IVPTConfig(num_classes=3, **overrides)
    return get_peft_model(make_backbone(kind), config)


def levels(model):
    return [m for m in model.modules() if isinstance(m, IVPTPromptLevel)]


@pytest.mark.parametrize("kind", BACKBONES)
def test_outputs_have_documented_shapes_and_meaning(kind, images, labels):
    model = ivpt(kind).eval()
    out = model(pixel_values=images, labels=labels)
    assert out.logits.shape == (4, 3)
    assert out.concept_logits.shape == (4, 3, 4)
    assert out.concept_maps.shape == (4, 5, GRID, GRID)
    torch.testing.assert_close(out.logits, out.concept_logits.mean(-1))
    torch.testing.assert_close(out.concept_maps.sum(1), torch.ones(4, GRID, GRID))
    assert out.loss.isfinite() and all(term.isfinite() for term in out.loss_terms.values())
    assert "equivariance" not in out.loss_terms  # eval mode: no second pass


def test_loss_is_weighted_sum_of_terms(images, labels):
    model = ivpt(presence_weight=0.5, orthogonality_weight=3.0, equivariance_weight=0.0).train()
    out = model(pixel_values=images, labels=labels)
    weights = {name: getattr(model.peft_config["default"], f"{name}_weight") for name in out.loss_terms}
    torch.testing.assert_close(out.loss, sum(weights[n] * t for n, t in out.loss_terms.items()))
    assert set(out.loss_terms) == {
        "classification", "consistency", "presence", "background_presence", "total_variation", "pixel_entropy",
        "orthogonality",
    }  # fmt: skip


def test_only_adapter_parameters_train_and_count_is_right():
    model = ivpt()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(("prompt_sources" in n) or ("token_shifts" in n) or ("ivpt_head" in n) for n in trainable)
    # hand count: per prompted level K*D prototypes + K*h*w bias + grouping D*N+N + prompt linear D*D+D;
    # head (N+1)*D + (N+1)*h*w + modulation 2*(N+1)*D + classifier C*D; token shift (1 + h*w)*D.
    D, N, C, hw = 32, 4, 3, GRID * GRID
    expected = sum(k * D + k * hw + D * N + N + D * D + D for k in (17, 14, 11, 8))
    expected += 5 * D + 5 * hw + 2 * 5 * D + C * D + (1 + hw) * D
    trainable_count, total = model.get_nb_trainable_parameters()
    assert trainable_count == expected
    assert total == expected + sum(p.numel() for p in make_backbone("dinov2").parameters())


def test_gradients_reach_exactly_the_adapter_parameters(images, labels):
    model = ivpt().train()
    model(pixel_values=images, labels=labels).loss.backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert with_grad == trainable


def test_gradient_paths_follow_the_paper(images, labels):
    """CE trains the prompt linears and the head, not the grouping; the consistency KL trains the grouping."""
    only = {f"{name}_weight": 0.0 for name in (
        "classification", "consistency", "presence", "background_presence", "total_variation", "pixel_entropy",
        "equivariance", "orthogonality")}  # fmt: skip

    def grads(term):
        model = ivpt(**{**only, f"{term}_weight": 1.0}).train()
        model(pixel_values=images, labels=labels).loss.backward()
        return {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}

    ce = grads("classification")
    assert not any(".grouping." in n for n in ce)
    assert any(".prompt_proj." in n for n in ce) and any("ivpt_head" in n and "classifier" in n for n in ce)
    con = grads("consistency")
    assert sum(".grouping." in n for n in con) == 2 * 4  # weight + bias of every level
    assert not any("ivpt_head" in n for n in con)  # the target is detached


MAP_TERMS = ("presence", "background_presence", "total_variation", "pixel_entropy", "equivariance")


@pytest.mark.parametrize("term", MAP_TERMS)
def test_map_losses_reach_only_prototypes_and_spatial_biases(term, images, labels):
    """As in the official code, every level's maps (the head's included) are computed on detached features: a map
    loss trains that level's prototypes and spatial bias, and gives exactly zero gradient to the prompt linears,
    prompt norms, grouping, head classifier, modulation and the CLS/position shift."""
    weights = {f"{name}_weight": 0.0 for name in ("classification", "consistency", "orthogonality", *MAP_TERMS)}
    model = ivpt(**{**weights, f"{term}_weight": 1.0}).train()
    model(pixel_values=images, labels=labels).loss.backward()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    map_params = {n for n in trainable if n.endswith(("concepts.prototypes", "concepts.spatial_bias"))}
    assert any("ivpt_head" in n for n in map_params)
    for name, param in trainable.items():
        if name not in map_params:
            assert param.grad is None or torch.count_nonzero(param.grad) == 0, name
    head_grads = [trainable[n].grad for n in map_params if "ivpt_head" in n]
    assert any(g is not None and g.abs().sum() > 0 for g in head_grads)


def test_presence_loss_is_averaged_over_groups_of_presence_group_size(images, labels):
    """Batch of 4, groups of 2: the total loss equals the one computed with per-group maxima by hand."""
    only_presence = {f"{name}_weight": 0.0 for name in ("classification", "consistency", "orthogonality", *MAP_TERMS)}
    only_presence["presence_weight"] = 1.0
    torch.manual_seed(0)
    grouped = ivpt(presence_group_size=2, **only_presence).eval()
    explanation = grouped.explain(images)
    out = grouped(pixel_values=images, labels=labels)

    def by_hand(maps):  # (B, K, h, w) renormalised maps of one level
        pooled = torch.nn.functional.avg_pool2d(maps[:, :-1], 3, stride=1)
        per_group = [1 - pooled[i : i + 2].amax(dim=(0, 2, 3)).mean() for i in (0, 2)]
        return sum(per_group) / 2

    expected = torch.stack([by_hand(maps) for maps in explanation.level_maps]).mean()
    torch.testing.assert_close(out.loss, expected)
    whole = torch.stack([1 - torch.nn.functional.avg_pool2d(m[:, :-1], 3, 1).amax(dim=(0, 2, 3)).mean()
                         for m in explanation.level_maps]).mean()  # fmt: skip
    assert not torch.allclose(out.loss, whole)  # the grouping changes the value at this batch


def test_frozen_backbone_is_unchanged_by_an_optimizer_step(images, labels):
    model = ivpt().train()
    base_before = {n: p.clone() for n, p in model.named_parameters() if not p.requires_grad}
    adapter_before = {n: p.clone() for n, p in model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.Adam(model.base_model.optimizer_param_groups())
    model(pixel_values=images, labels=labels).loss.backward()
    optimizer.step()
    params = dict(model.named_parameters())
    assert all(torch.equal(params[n], before) for n, before in base_before.items())
    assert all(not torch.equal(params[n], before) for n, before in adapter_before.items())


def test_optimizer_groups_use_the_paper_learning_rates():
    groups = ivpt().base_model.optimizer_param_groups()
    assert [g["lr"] for g in groups] == [1e-2, 2e-4]
    slow = {id(p) for p in groups[1]["params"]}
    named = dict(ivpt().named_parameters())
    assert len(slow) == sum(1 for n in named if n.endswith(("prototypes", "spatial_bias", "token_shifts.default")))


@pytest.mark.parametrize("kind", BACKBONES)
def test_disable_adapter_gives_the_untouched_base_model(kind, images):
    reference = make_backbone(kind)
    model = ivpt(kind)
    kwargs = {"pixel_values": images}
    if kind == "clip":
        kwargs["input_ids"] = torch.tensor([[0, 5, 98]])
    with model.disable_adapter():
        actual = model(**kwargs)
    expected = reference(**kwargs)
    for key in expected.keys():
        if torch.is_tensor(expected[key]):
            assert torch.equal(actual[key], expected[key]), key
    assert model(pixel_values=images).logits.shape == (4, 3)  # enabled again afterwards


def test_unload_returns_the_original_module_tree(images):
    reference = make_backbone("dinov2")
    model = ivpt()
    unloaded = model.unload()
    assert not any(isinstance(m, InterpLayer) for m in unloaded.modules())
    assert [(n, type(m)) for n, m in unloaded.named_modules()] == [(n, type(m)) for n, m in reference.named_modules()]
    assert unloaded.state_dict().keys() == reference.state_dict().keys()
    assert torch.equal(unloaded(pixel_values=images).last_hidden_state, reference(pixel_values=images).last_hidden_state)


def test_two_adapters_coexist_and_switch(images, labels):
    model = ivpt().eval()
    first = model(pixel_values=images).logits
    model.add_adapter("coarse", IVPTConfig(num_classes=7, num_prototypes=[6, 3], equivariance_weight=0.0))
    assert torch.equal(model(pixel_values=images).logits, first)  # adding does not activate

    model.set_adapter("coarse")
    out = model(pixel_values=images)
    assert out.logits.shape == (4, 7) and out.concept_maps.shape == (4, 3, GRID, GRID)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("coarse" in n for n in trainable)
    with model.disable_adapter():
        assert torch.equal(model(pixel_values=images).last_hidden_state, make_backbone("dinov2")(images).last_hidden_state)

    model.set_adapter("default")
    assert torch.equal(model(pixel_values=images).logits, first)
    model.delete_adapter("coarse")
    assert not any("coarse" in n for n, _ in model.named_parameters())


def test_explain_reports_every_layer_from_one_forward(images):
    model = ivpt().eval()
    out = model(pixel_values=images)
    explanation = model.explain(images)
    assert explanation.layer_names[-1] == "head" and len(explanation.layer_names) == 5
    assert len(explanation.concept_maps) == 5 and len(explanation.grouping) == 4
    assert [m.shape[1] for m in explanation.level_maps] == [17, 14, 11, 8, 5]
    assert [g.shape[1:] for g in explanation.grouping] == [(16, 4), (13, 4), (10, 4), (7, 4)]
    assert torch.equal(explanation.concept_maps[-1], out.concept_maps)
    picked = explanation.logits.gather(1, explanation.predictions[:, None])[:, 0]
    torch.testing.assert_close(explanation.contributions.sum(-1), picked)
    torch.testing.assert_close(explanation.predictions, out.logits.argmax(-1))


def test_inference_is_deterministic_unless_gumbel_at_inference(images):
    model = ivpt().eval()
    assert torch.equal(model(pixel_values=images).logits, model(pixel_values=images).logits)
    noisy = ivpt(gumbel_at_inference=True).eval()
    assert not torch.equal(noisy(pixel_values=images).logits, noisy(pixel_values=images).logits)


def test_equivariance_of_identity_transform_is_zero(images, labels):
    model = ivpt(equivariance_rotation=0.0, equivariance_translation=0.0, equivariance_scale=(1.0, 1.0), grouping="softmax")
    out = model.train()(pixel_values=images, labels=labels)
    assert out.loss_terms["equivariance"] < 1e-6


def test_readme_snippet_trains_with_decreasing_loss():
    torch.manual_seed(0)
    model = get_peft_model(Dinov2Model(Dinov2Config(**VIT)), IVPTConfig(num_classes=5))
    images, labels = torch.randn(8, 3, IMAGE_SIZE, IMAGE_SIZE), torch.randint(0, 5, (8,))
    optimizer = torch.optim.Adam(model.base_model.optimizer_param_groups())
    history = []
    for _ in range(12):
        loss = model(pixel_values=images, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    assert sum(history[-3:]) < sum(history[:3]) - 0.3


# ------------------------------------------------------------------------------------------------ validation
@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"num_prototypes": [5, 8, 3]}, "num_prototypes"),
        ({"num_prototypes": [5, 1]}, "num_prototypes"),
        ({"num_prototypes": []}, "num_prototypes"),
        ({"spatial_bias": "after_softmax"}, "spatial_bias"),
        ({"grouping": "hard"}, "grouping"),
        ({"presence_weight": -1.0}, "presence_weight"),
        ({"num_classes": 0}, "num_classes"),
        ({"equivariance_scale": (1.2, 0.8)}, "equivariance_scale"),
    ],
)
def test_bad_config_values_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=f"`{field}`"):
        IVPTConfig(**{"num_classes": 3, **kwargs})


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_prototypes": [9, 8, 7, 6, 5, 4]}, r"prompts 5 blocks but the model has only 4.*`num_prototypes`"),
        ({"image_size": 30}, r"`image_size`=30 is not divisible by the model's patch size 7"),
        ({"target_modules": ["encoder.layer.3", "pooler"]}, r"`target_modules` names unknown modules \['pooler'\]"),
        ({"target_modules": ["encoder.layer.3"]}, r"`target_modules` selects 1 blocks but `num_prototypes`"),
    ],
)
def test_model_dependent_errors_name_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ivpt(**kwargs)


def test_wrong_image_size_at_forward_names_the_expected_shape():
    with pytest.raises(ValueError, match=r"`pixel_values` must have shape \(B, C, 28, 28\)"):
        ivpt()(pixel_values=torch.randn(1, 3, 35, 35))


def test_target_modules_regex_and_custom_levels(images):
    model = ivpt(num_prototypes=[6, 3], target_modules=r"encoder\.layer\.1", train_token_embeddings=False)
    wrapped = [n.removeprefix("base_model.model.") for n, m in model.named_modules() if isinstance(m, InterpLayer)]
    assert wrapped == ["encoder.layer.1"]
    assert model(pixel_values=images).concept_maps.shape == (4, 3, GRID, GRID)
    assert copy.deepcopy(model)(pixel_values=images).logits.shape == (4, 3)


@pytest.mark.parametrize("config_cls", [IVPTConfig, VPTDeepConfig])
def test_half_precision_backbone_keeps_fp32_adapter(config_cls, images, labels):
    model = get_peft_model(make_backbone("dinov2").to(torch.bfloat16), config_cls(num_classes=3))
    out = model(pixel_values=images.to(torch.bfloat16), labels=labels)
    assert out.logits.dtype == torch.float32 and out.loss.isfinite()
    out.loss.backward()
    assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)
