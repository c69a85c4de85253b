"""The CLIP prompt core's caches (prompts, zero-shot / hand-crafted text features, attribute embeddings, image
features): a changed class list, dtype or device must never reuse what was computed before, and every cached
view must equal the one of a model built fresh for the new setting."""

from unittest import mock

import pytest
import torch
from peft import get_peft_model

from peft_interp import CoOpConfig, DualViewMIConfig, IntCoOpConfig
try:
    from peft_interp.tuners.clip_prompt.model import pixel_digest
except ImportError:
    pixel_digest = None

from .tiny_models import make_clip

CLASSES = ["cat", "red-headed bird", "dog"]
NOVEL = ["owl", "fox", "green tree frog"]  # as many names as CLASSES: a cache keyed by the count would collide


def build(config_cls, class_names, **overrides):
    torch.manual_seed(3)
    model = get_peft_model(make_clip(), config_cls(class_names=class_names, **overrides))
    with torch.no_grad():  # a trained-looking context (same draw for every model built here)
        context = model.base_model.context_layer.context["default"]
        context.copy_(torch.randn(context.shape, generator=torch.Generator().manual_seed(5)))
    return model


def views(model, images, attributes=None):
    """Every output the caches feed: adapted logits and text features, zero-shot logits and text features."""
    kwargs = {"pixel_values": images} if attributes is None else {"pixel_values": images, "attributes": attributes}
    with torch.no_grad():
        adapted = model(**kwargs)
        with model.disable_adapter():
            zero_shot = model(pixel_values=images)
    return {
        "logits": adapted.logits,
        "text_embeds": adapted.text_embeds,
        "zero_shot_logits": zero_shot.logits,
        "zero_shot_text_embeds": zero_shot.text_embeds,
    }


def assert_views_equal(actual, expected):
    for name in expected:
        assert actual[name].dtype == expected[name].dtype, name
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-6, atol=1e-6, msg=name)


# ------------------------------------------------------------------------------------------ new class names
@pytest.mark.parametrize("cache_images", [False, True])
def test_coop_same_number_of_new_names_equals_a_fresh_model(images, cache_images):
    model = build(CoOpConfig, CLASSES, cache_image_features=cache_images).eval()
    before = views(model, images)  # fills every cache for CLASSES
    model.set_class_names(NOVEL)
    after = views(model, images)
    assert_views_equal(after, views(build(CoOpConfig, NOVEL, cache_image_features=cache_images).eval(), images))
    assert not torch.allclose(after["zero_shot_logits"], before["zero_shot_logits"])
    assert not torch.allclose(after["logits"], before["logits"])
    model.set_class_names(CLASSES)  # and back: the first class list's caches are still right
    assert_views_equal(views(model, images), before)


def test_dualview_same_number_of_new_names_equals_a_fresh_model(images):
    """The hand-crafted view (a cached template ensemble) follows the class list: late-fusion logits, the
    views' similarity and the hand-crafted features equal those of a model built for the new names."""
    config = dict(templates=["a photo of a {}.", "a drawing of a {}."], inference="late_fusion", fusion_weight=0.3)
    model = build(DualViewMIConfig, CLASSES, **config).eval()
    views(model, images)
    model.base_model.explain_views()
    model.set_class_names(NOVEL)
    fresh = build(DualViewMIConfig, NOVEL, **config).eval()
    assert_views_equal(views(model, images), views(fresh, images))
    torch.testing.assert_close(
        model.base_model.hand_crafted_features("default"), fresh.base_model.hand_crafted_features("default")
    )
    torch.testing.assert_close(
        model.base_model.explain_views().view_similarity, fresh.base_model.explain_views().view_similarity
    )


def test_intcoop_same_number_of_new_names_equals_a_fresh_model(images, labels):
    """IntCoOp caches zero-shot features per attribute word (the targets of L_reg) and the attribute embeddings."""
    config = dict(visual_prompt_depth=1)
    attributes = ["green", None, "fluffy", "green"]
    model = build(IntCoOpConfig, CLASSES, **config).train()
    model(pixel_values=images, labels=labels, attributes=attributes)
    model.set_class_names(NOVEL)
    fresh = build(IntCoOpConfig, NOVEL, **config).train()
    with torch.no_grad():
        for name, param in fresh.named_parameters():
            param.copy_(dict(model.named_parameters())[name])
    ours = model(pixel_values=images, labels=labels, attributes=attributes)
    theirs = fresh(pixel_values=images, labels=labels, attributes=attributes)
    for name in theirs.loss_terms:
        torch.testing.assert_close(ours.loss_terms[name], theirs.loss_terms[name], msg=name)
    torch.testing.assert_close(
        model.base_model.reference_text_features(attributes, "default", 4),
        fresh.base_model.reference_text_features(attributes, "default", 4),
    )
    assert_views_equal(views(model.eval(), images, attributes), views(fresh.eval(), images, attributes))


# -------------------------------------------------------------------------------------------- dtype, device
@pytest.mark.parametrize(
    "config_cls, overrides",
    [
        (CoOpConfig, {}),
        (CoOpConfig, {"cache_image_features": True}),
        (DualViewMIConfig, {"inference": "late_fusion", "fusion_weight": 0.3}),
        (DualViewMIConfig, {"inference": "average"}),
    ],
)
def test_float64_after_use_equals_a_model_built_in_float64(images, config_cls, overrides):
    """Caches filled in float32 are not reused after ``model.to(torch.float64)`` (a dtype mismatch before)."""
    model = build(config_cls, CLASSES, **overrides).eval()
    views(model, images)  # fills the float32 caches
    model.to(torch.float64)
    after = views(model, images.double())
    expected = views(build(config_cls, CLASSES, **overrides).eval().to(torch.float64), images.double())
    for name, value in after.items():
        assert value.dtype == torch.float64, name
    assert_views_equal(after, expected)


def test_bf16_clip_with_image_cache_matches_the_uncached_model(images):
    """A bfloat16 CLIP caches image features too (the pixel hash no longer goes through NumPy, which has no
    bfloat16) and the cached logits are bit-identical to the uncached ones."""
    pixels = images.to(torch.bfloat16)
    cached = build(CoOpConfig, CLASSES, cache_image_features=True).to(torch.bfloat16).eval()
    uncached = build(CoOpConfig, CLASSES).to(torch.bfloat16).eval()
    clip = cached.base_model.model
    with torch.no_grad(), mock.patch.object(clip, "get_image_features", wraps=clip.get_image_features) as calls:
        first = cached(pixel_values=pixels).logits
        second = cached(pixel_values=pixels).logits
        expected = uncached(pixel_values=pixels).logits
    assert calls.call_count == 1
    assert torch.equal(first, expected) and torch.equal(second, expected)


def test_pixel_digest_tells_dtypes_shapes_and_values_apart():
    image = torch.arange(12, dtype=torch.float32).reshape(3, 2, 2)
    digests = {
        pixel_digest(image),
        pixel_digest(image.to(torch.bfloat16)),
        pixel_digest(image.to(torch.float16)),
        pixel_digest(image.reshape(3, 4, 1)),
        pixel_digest(image + torch.tensor(1e-6)),
    }
    assert len(digests) == 5
    assert pixel_digest(image) == pixel_digest(image.clone())
    assert pixel_digest(image.transpose(1, 2).contiguous().transpose(1, 2)) == pixel_digest(image)  # strides ignored


def test_image_cache_is_keyed_by_the_towers_dtype(images):
    model = build(CoOpConfig, CLASSES, cache_image_features=True).eval()
    with torch.no_grad():
        single = model(pixel_values=images).image_embeds
        model.to(torch.float64)
        double = model(pixel_values=images.double()).image_embeds
    assert single.dtype == torch.float32 and double.dtype == torch.float64
    torch.testing.assert_close(double.float(), single, rtol=1e-5, atol=1e-6)
    assert len(model.base_model._image_cache) == 2 * len(images)
