"""Concept naming: from ground-truth part masks and keypoints (answers known by construction), from a CLIP
vocabulary, stored in the adapter and used by explanations, and the held-out naming accuracy."""

from unittest import mock

import pytest
import torch
from peft import PeftModel, get_peft_model

from peft_interp import IVPTConfig, IVPTModel, name_concepts
from peft_interp.naming import (
    name_from_features,
    name_from_part_mass,
    name_from_part_vectors,
    naming_accuracy,
    region_features,
    unique_names,
    word_features,
)
from peft_interp.tuners.explanation import Explanation

from .tiny_models import IMAGE_SIZE, make_backbone

PARTS = ["head", "body", "wing", "tail"]


def test_unique_names_number_repeats():
    assert unique_names(["head", "wing", "head", "head"]) == ["head", "wing", "head 2", "head 3"]


def test_names_from_part_mass_take_the_largest_mean_share():
    mass = torch.tensor([
        [[0.7, 0.1, 0.0, 0.0], [0.0, 0.2, 0.6, 0.0], [0.5, 0.0, 0.0, 0.1]],
        [[0.5, 0.3, 0.0, 0.0], [0.0, 0.5, 0.3, 0.0], [0.1, 0.0, 0.0, 0.6]],
    ])  # (2 images, 3 concepts, 4 parts)  # fmt: skip
    naming = name_from_part_mass(mass, PARTS)
    # means: concept 0 head 0.6; concept 1 body 0.35 / wing 0.45 -> wing; concept 2 head 0.3 / tail 0.35 -> tail
    assert naming.labels == ["head", "wing", "tail"] and naming.names == ["head", "wing", "tail"]
    assert naming.source == "part masks"
    torch.testing.assert_close(naming.scores[1], torch.tensor([0.0, 0.35, 0.45, 0.0]))
    with pytest.raises(ValueError, match="3 part names for 4 parts"):
        name_from_part_mass(mass, PARTS[:3])


def test_names_from_keypoints_count_hits_per_visible_part():
    vectors = torch.tensor([[[1, 0, 0]], [[0, 1, 0]], [[0, 1, 0]]])  # 3 images, 1 concept, 3 parts
    visible = torch.tensor([[1, 1, 1], [0, 1, 1], [0, 1, 1]]).bool()
    naming = name_from_part_vectors(vectors, visible, ["beak", "eye", "leg"])
    torch.testing.assert_close(naming.scores, torch.tensor([[1.0, 2 / 3, 0.0]]))  # beak: 1 hit in 1 visible
    assert naming.names == ["beak"]


def test_names_from_features_pick_the_most_similar_word():
    regions = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    words = torch.tensor([[0.0, 2.0], [3.0, 0.1], [1.0, 1.0]])
    assert name_from_features(regions, words, ["tail", "head", "wing"]).names == ["head", "wing"]


# ------------------------------------------------------------------------------------------------ with a model
def hand_maps(batch: int) -> torch.Tensor:
    """(B, 4, 4, 4) concept maps: concept 0 on the top rows, 1 on the bottom rows, 2 and 3 on the left columns
    of the middle rows (2 a little stronger)."""
    maps = torch.zeros(batch, 4, 4, 4)
    maps[:, 0, :1] = 1.0
    maps[:, 1, 3:] = 1.0
    maps[:, 2, 1:3, :2] = 0.6
    maps[:, 3, 1:3, :2] = 0.4
    return maps


def fake_explain(self, pixel_values):
    logits = torch.zeros(len(pixel_values), 3)
    return Explanation(logits=logits, predictions=logits.argmax(-1), maps=hand_maps(len(pixel_values)))


@pytest.fixture
def ivpt():
    return get_peft_model(make_backbone("dinov2"), IVPTConfig(num_classes=3, image_size=IMAGE_SIZE))


def test_name_concepts_from_part_masks_stores_the_names_everywhere(ivpt, tmp_path):
    masks = torch.zeros(3, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.long)  # 28 px, patch rows of 7 px
    masks[:, :7] = 1  # head on the top patch row
    masks[:, 21:] = 4  # tail on the bottom patch row
    masks[:, 7:21, :14] = 3  # wing on the left of the middle rows
    images = torch.randn(3, 3, IMAGE_SIZE, IMAGE_SIZE)
    with mock.patch.object(IVPTModel, "explain", fake_explain):
        naming = name_concepts(ivpt, images, part_masks=masks, part_names=PARTS)
    assert naming.labels == ["head", "tail", "wing", "wing"] and naming.names == ["head", "tail", "wing", "wing 2"]
    assert ivpt.peft_config["default"].concept_names == naming.names
    ivpt.eval()
    assert ivpt.explain(images).map_names == naming.names
    assert ivpt.base_model.explanation_metadata()["concepts"] == naming.names
    ivpt.save_pretrained(tmp_path)
    reloaded = PeftModel.from_pretrained(make_backbone("dinov2"), tmp_path)
    assert reloaded.peft_config["default"].concept_names == naming.names


def test_name_concepts_from_keypoints(ivpt):
    images = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE)
    # (x, y) near the maps' peaks (row, column) (1, 2), (26, 2), (13, 8), (13, 8); the box half-size is 4 px at 28 px
    keypoints = torch.tensor([[3.0, 3.0], [3.0, 25.0], [8.0, 14.0]]).expand(2, -1, -1)
    visible = torch.ones(2, 3, dtype=torch.bool)
    with mock.patch.object(IVPTModel, "explain", fake_explain):
        naming = name_concepts(ivpt, images, keypoints=keypoints, keypoints_visible=visible,
                               part_names=["crown", "foot", "wing"], store=False)  # fmt: skip
    assert naming.labels == ["crown", "foot", "wing", "wing"] and naming.source == "part keypoints"
    assert ivpt.peft_config["default"].concept_names is None  # store=False


def test_name_concepts_from_the_clip_vocabulary_uses_its_own_text_tower_with_the_adapter_off():
    model = get_peft_model(make_backbone("clip"), IVPTConfig(num_classes=3, image_size=IMAGE_SIZE)).eval()
    images = torch.randn(4, 3, IMAGE_SIZE, IMAGE_SIZE)
    words = ["head", "wing", "tail"]

    class Tokenizer:  # the tiny CLIP has 99 tokens: one id per word
        def __call__(self, texts, padding, return_tensors):
            ids = torch.tensor([[1, 2 + words.index(text.split()[4]), 3] for text in texts])  # "a photo of the {}"
            return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    with mock.patch.object(IVPTModel, "explain", fake_explain):
        naming = name_concepts(model, images, vocabulary=words, tokenizer=Tokenizer())
    clip = model.base_model.model
    with model.disable_adapter(), torch.no_grad():
        expected = name_from_features(region_features(clip, hand_maps(4), images),
                                      word_features(clip, Tokenizer(), words), words)  # fmt: skip
    assert naming.names == expected.names and naming.source == "CLIP vocabulary"
    torch.testing.assert_close(naming.scores, expected.scores)
    with torch.no_grad():  # with the prompts on, the image features differ: switching the adapter off matters
        prompted = region_features(clip, hand_maps(4), images)
        with model.disable_adapter():
            assert not torch.allclose(prompted, region_features(clip, hand_maps(4), images))


def test_vocabulary_naming_without_a_clip_model_says_what_to_give(ivpt):
    with mock.patch.object(IVPTModel, "explain", fake_explain), pytest.raises(ValueError, match="pass `clip_model`"):
        name_concepts(ivpt, torch.randn(1, 3, IMAGE_SIZE, IMAGE_SIZE))


def test_naming_accuracy_on_held_out_images():
    naming = name_from_part_mass(torch.tensor([[[0.9, 0.1], [0.2, 0.7]]]), ["head", "tail"])  # head, tail
    held_out = torch.tensor([[[0.6, 0.3], [0.1, 0.8]], [[0.2, 0.5], [0.3, 0.4]]])  # right: 3 of 4
    assert naming_accuracy(held_out, naming, ["head", "tail"]) == 75.0
