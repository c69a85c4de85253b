"""The evaluation runner wires datasets, models and the packaged metrics together correctly."""

import pytest
import torch
from datasets import Dataset
from peft import get_peft_model

from peft_interp import CoOpConfig, IVPTConfig, VPTDeepConfig
from peft_interp.data import load_conceptworld
from peft_interp.evaluation import (
    load_metric,
    part_mass,
    part_vectors,
    scaled_box_half_size,
    stability_noise,
)
from peft_interp.training.data import ImageCollator, ImageTransform
from peft_interp.evaluation.runner import evaluate_base_to_novel, evaluate_parts

from .tiny_models import IMAGE_SIZE, make_backbone, make_clip


@pytest.fixture(scope="module")
def conceptworld():
    return load_conceptworld("base_test", num_images=6, image_size=IMAGE_SIZE)


def test_evaluate_parts_equals_the_metrics_applied_by_hand(conceptworld):
    model = get_peft_model(make_backbone("dinov2"), IVPTConfig(num_classes=50, image_size=IMAGE_SIZE)).eval()
    collator = ImageCollator(ImageTransform(IMAGE_SIZE))
    results = evaluate_parts(model, conceptworld, collator, batch_size=6, noise_seed=3)

    batch = collator([conceptworld[i] for i in range(len(conceptworld))])
    annotations = conceptworld.with_format("torch")[:]
    keypoints, visible = annotations["keypoints"], annotations["keypoints_visible"].bool()
    clean = model.base_model.part_maps(batch["pixel_values"])
    noisy_pixels = stability_noise(batch["pixel_values"], generator=torch.Generator().manual_seed(3))
    noisy = model.base_model.part_maps(noisy_pixels)
    assert clean.prototype_maps.shape[1] == 10  # IVPT's 11-prototype level, background dropped
    box = scaled_box_half_size(IMAGE_SIZE)
    vectors = part_vectors(clean.prototype_maps, keypoints, visible, IMAGE_SIZE, box).tolist()
    noisy_vectors = part_vectors(noisy.prototype_maps, keypoints, visible, IMAGE_SIZE, box).tolist()
    labels = batch["labels"].tolist()
    expected = {
        "accuracy": 100 * (clean.logits.argmax(-1) == batch["labels"]).float().mean().item(),
        **load_metric("part_consistency").compute(part_vectors=vectors, labels=labels, part_visible=visible.tolist()),
        **load_metric("part_stability").compute(part_vectors=vectors, noisy_part_vectors=noisy_vectors, labels=labels),
        **load_metric("concept_alignment").compute(
            part_mass=part_mass(clean.concept_maps, annotations["part_masks"].long(), 4).tolist()
        ),
    }
    assert results.keys() == expected.keys()
    for key, value in expected.items():
        assert results[key] == pytest.approx(value), key


def test_vpt_deep_part_maps_come_with_the_forward_logits(images):
    model = get_peft_model(make_backbone("dinov2"), VPTDeepConfig(num_classes=3, image_size=IMAGE_SIZE)).eval()
    maps = model.base_model.part_maps(images)
    with torch.no_grad():
        torch.testing.assert_close(maps.logits, model(pixel_values=images).logits)
    assert maps.prototype_maps.shape == (4, model.peft_config["default"].num_prompt_tokens, 4, 4)
    torch.testing.assert_close(maps.prototype_maps.sum(1), torch.ones(4, 4, 4))


def test_base_to_novel_scores_each_split_over_its_own_names_and_restores_the_base_names(conceptworld, images):
    model = get_peft_model(make_clip(), CoOpConfig(class_names=["cat", "dog"])).eval()
    rows = Dataset.from_list([{"image": conceptworld[i]["image"], "label": i % 2} for i in range(4)])
    collator = ImageCollator(ImageTransform(IMAGE_SIZE))
    results = evaluate_base_to_novel(model, rows.select([0, 1]), rows.select([2, 3]), ["car", "tree"], collator)

    batch = collator(list(rows))
    with torch.no_grad():
        base_hits = model(pixel_values=batch["pixel_values"][:2]).logits.argmax(-1) == batch["labels"][:2]
        model.base_model.set_class_names(["car", "tree"])
        novel_hits = model(pixel_values=batch["pixel_values"][2:]).logits.argmax(-1) == batch["labels"][2:]
        model.base_model.set_class_names(["cat", "dog"])
    base, novel = 100 * base_hits.float().mean().item(), 100 * novel_hits.float().mean().item()
    assert results["base"] == pytest.approx(base) and results["novel"] == pytest.approx(novel)
    assert results["hm"] == pytest.approx(2 * base * novel / (base + novel) if base + novel else 0.0)
    assert model.peft_config["default"].class_names == ["cat", "dog"]
