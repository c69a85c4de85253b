"""Tests of the tiny pretrained backbones shipped in `peft_interp/checkpoints/` and of the code that trained them.

The shipped weights are checked for real: they load offline, have the documented architecture, and the CLIP
classifies unseen (novel) ConceptWorld classes zero-shot well above chance.
"""

import os
import re
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors import safe_open
from torch.nn import functional as F
from transformers import CLIPModel, CLIPTokenizer, Dinov2WithRegistersModel

from peft_interp.data import class_names, load_clip_tokenizer, load_conceptworld
from peft_interp.data.conceptworld import (
    CLASS_ATTRIBUTES,
    PART_NAMES,
    PART_SHAPES,
    ConceptWorldConfig,
    all_classes,
    attribute_vocabulary,
    sample_attributes,
)
from peft_interp.shipped import (
    DEFAULT_BACKBONES,
    checkpoint_path,
    default_processor,
    default_tokenizer,
    load_default,
    pretraining_info,
)
from scripts.pretrain import (
    ATTRIBUTE_PROMPTS,
    ATTRIBUTE_SLOTS,
    CLIP_MEAN_STD,
    DINOV2_MEAN_STD,
    Dinov2Pretraining,
    PretrainingSettings,
    attribute_targets,
    attribute_zero_shot,
    class_key,
    hard_negative_batches,
    patch_attribute_targets,
    patch_supervision_loss,
    flip_images,
    flip_patch_grid,
    normalize,
    patch_part_labels,
    patchify,
    render_pretraining_images,
    sample_block_masks,
    sample_caption,
    train_clip,
    train_dinov2,
    tiny_dinov2_config,
)


MAX_WEIGHTS_MB = 25.0


@pytest.fixture(scope="module")
def clip() -> CLIPModel:
    return load_default("clip")


@pytest.fixture(scope="module")
def dinov2() -> Dinov2WithRegistersModel:
    return load_default("dinov2")


@pytest.fixture(scope="module")
def novel_test_sample():
    """100 novel_test images, 2 per novel class."""
    return load_conceptworld("novel_test", shots=2)


# ----------------------------------------------------------------------------------------------------------------
# Shipped checkpoints
# ----------------------------------------------------------------------------------------------------------------


def test_checkpoints_load_offline(clip, dinov2):
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert isinstance(clip, CLIPModel) and isinstance(dinov2, Dinov2WithRegistersModel)
    for model in (clip, dinov2):
        assert not model.training
        assert all(parameter.dtype == torch.float32 for parameter in model.parameters())


def test_unknown_backbone_name():
    with pytest.raises(ValueError, match="unknown default backbone"):
        load_default("resnet")


def test_old_module_name_hub_still_imports_with_a_deprecation_warning(monkeypatch):
    import importlib
    import sys

    import peft_interp.shipped

    monkeypatch.delitem(sys.modules, "peft_interp.hub", raising=False)
    with pytest.warns(DeprecationWarning, match="peft_interp.hub is renamed peft_interp.shipped"):
        hub = importlib.import_module("peft_interp.hub")
    assert hub.load_base_model is peft_interp.shipped.load_base_model
    assert set(hub.__all__) == set(peft_interp.shipped.__all__)
    assert all(getattr(hub, name) is getattr(peft_interp.shipped, name) for name in hub.__all__)


def test_the_installed_package_does_not_import_the_build_time_scripts():
    from pathlib import Path

    import peft_interp

    package = Path(peft_interp.__file__).parent
    importers = [str(path.relative_to(package)) for path in package.rglob("*.py")
                 if re.search(r"^\s*(from|import)\s+(scripts|peft_interp\.pretrain)\b", path.read_text("utf-8"), re.M)]
    assert importers == [] and not (package / "pretrain.py").exists()


def test_clip_architecture(clip):
    vision, text = clip.config.vision_config, clip.config.text_config
    assert (vision.image_size, vision.patch_size, vision.hidden_size, vision.num_hidden_layers) == (64, 8, 128, 4)
    assert (text.vocab_size, text.max_position_embeddings) == (49408, 77)
    assert (text.hidden_size, text.num_hidden_layers) == (128, 4)
    assert text.eos_token_id == 49407
    assert clip.config.projection_dim == 128
    assert 0 < clip.logit_scale.exp().item() <= 100.0


def test_dinov2_architecture(dinov2):
    config = dinov2.config
    assert (config.image_size, config.patch_size, config.hidden_size, config.num_hidden_layers) == (64, 8, 128, 4)
    assert config.num_register_tokens == 4


def test_weights_are_small_float16_safetensors():
    total_bytes = 0
    for name in DEFAULT_BACKBONES:
        weights = checkpoint_path(name) / "model.safetensors"
        total_bytes += weights.stat().st_size
        with safe_open(weights, framework="pt") as file:
            assert {file.get_slice(key).get_dtype() for key in file.keys()} == {"F16"}
    assert total_bytes / 2**20 <= MAX_WEIGHTS_MB


def test_outputs_are_finite(clip, dinov2):
    pixel_values = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    text = default_tokenizer()(["a photo of a bird.", "a red-headed bird"], padding=True, return_tensors="pt")
    with torch.no_grad():
        clip_output = clip(**text, pixel_values=pixel_values)
        dinov2_output = dinov2(pixel_values=pixel_values)
    assert clip_output.logits_per_image.shape == (2, 2)
    assert clip_output.image_embeds.shape == clip_output.text_embeds.shape == (2, 128)
    assert dinov2_output.last_hidden_state.shape == (2, 1 + 4 + 64, 128)
    assert torch.isfinite(clip_output.logits_per_image).all()
    assert torch.isfinite(clip_output.vision_model_output.last_hidden_state).all()
    assert torch.isfinite(dinov2_output.last_hidden_state).all()


@pytest.mark.parametrize("name, mean_std", [("clip", CLIP_MEAN_STD), ("dinov2", DINOV2_MEAN_STD)])
def test_processor_normalizes_as_in_pretraining(name, mean_std, novel_test_sample):
    images = list(novel_test_sample.select(range(4))["image"])
    pixel_values = default_processor(name)(images, return_tensors="pt").pixel_values
    uint8 = torch.from_numpy(np.stack([np.asarray(image) for image in images])).permute(0, 3, 1, 2)
    torch.testing.assert_close(pixel_values, normalize(uint8, mean_std), atol=1e-5, rtol=0)


def test_checkpoint_tokenizer_matches_shipped_tokenizer():
    texts = [*class_names("novel_test")[:5], "a photo of a red-headed blue-bodied striped-winged long-tailed bird."]
    reference = load_clip_tokenizer()(texts)["input_ids"]
    assert CLIPTokenizer.from_pretrained(checkpoint_path("clip"))(texts)["input_ids"] == reference
    tricky = ["caf\u00e9 &amp; \u201cquotes\u201d", "\uff21\uff22\uff23 \ufb01sh"]  # needs OpenAI's text cleaning
    assert default_tokenizer()(tricky)["input_ids"] == load_clip_tokenizer()(tricky)["input_ids"]


@torch.no_grad()
def test_clip_zero_shot_on_novel_classes(clip, novel_test_sample):
    """Classes never seen in pretraining, recognised from their names alone, at least 3x chance (the sanity table of
    `benchmarks/conceptworld_baselines.py` measures about 17x on the whole novel_test split)."""
    names = class_names("novel_test")
    text = default_tokenizer()([f"a photo of a {name}." for name in names], padding=True, return_tensors="pt")
    text_embeds = F.normalize(clip.get_text_features(**text).pooler_output, dim=-1)
    pixel_values = default_processor("clip")(list(novel_test_sample["image"]), return_tensors="pt").pixel_values
    image_embeds = F.normalize(clip.get_image_features(pixel_values=pixel_values).pooler_output, dim=-1)
    labels = torch.tensor(list(novel_test_sample["label"]))
    accuracy = ((image_embeds @ text_embeds.T).argmax(-1) == labels).float().mean().item()
    assert accuracy >= 3 / len(names)


@pytest.mark.parametrize("name", DEFAULT_BACKBONES)
def test_pretraining_is_documented(name):
    info = pretraining_info(name)
    assert info["split"] == "pretraining"
    assert isinstance(info["seed"], int)
    assert info["conceptworld_config"]["image_size"] == 64
    assert info["wall_clock_seconds"]["training"] > 0


# ----------------------------------------------------------------------------------------------------------------
# Pretraining code
# ----------------------------------------------------------------------------------------------------------------


def test_captions_only_say_true_things():
    rng = np.random.default_rng(0)
    for index in range(200):
        attributes = sample_attributes(all_classes()[index], rng)
        caption = sample_caption(attributes, rng)
        for word, part in re.findall(r"(\w+)-(head|bodi|wing|tail)ed", caption):
            part = {"bodi": "body"}.get(part, part)
            assert word in attributes[part].values(), caption
        assert "bird" in caption


def test_paintings_are_captioned_as_paintings_only_as_often_as_asked():
    rng = np.random.default_rng(0)
    attributes = sample_attributes(all_classes()[5], rng)
    always = [sample_caption(attributes, rng, "painting", 1.0) for _ in range(50)]
    assert all(caption.startswith("a painting of ") for caption in always)
    sometimes = [sample_caption(attributes, rng, "painting", 0.25) for _ in range(800)]
    assert 150 < sum(caption.startswith("a painting of ") for caption in sometimes) < 250
    photos = [sample_caption(attributes, rng, "photo", 1.0) for _ in range(200)]
    assert not any("painting" in caption for caption in photos)


def test_hard_negative_groups_differ_from_their_anchor_in_exactly_one_attribute_each():
    keys = [tuple(bird_class) for bird_class in all_classes() for _ in range(2)]
    batches = list(hard_negative_batches(keys, batch_size=8, group_size=4, rng=np.random.default_rng(0)))
    assert len(batches) == len(keys) // 8
    anchors = [batch[i].item() for batch in batches for i in (0, 4)]
    assert len(set(anchors)) == len(anchors)  # every image is an anchor at most once an epoch
    for batch in batches:
        for group in batch.view(2, 4).tolist():
            anchor, neighbours = keys[group[0]], [keys[index] for index in group[1:]]
            differing = [[slot for slot in range(4) if key[slot] != anchor[slot]] for key in neighbours]
            assert all(len(slots) == 1 for slots in differing), (anchor, neighbours)
            assert len({slots[0] for slots in differing}) == 3  # three different attributes
    plain = list(hard_negative_batches(keys, batch_size=8, group_size=1, rng=np.random.default_rng(0)))
    assert sorted(torch.cat(plain).tolist()) == sorted(set(torch.cat(plain).tolist()))  # group 1: a plain shuffle
    with pytest.raises(ValueError, match="clip_group_size"):
        next(hard_negative_batches(keys, batch_size=8, group_size=3, rng=np.random.default_rng(0)))


def test_class_key_reads_the_class_defining_attributes():
    bird_class = all_classes()[300]
    attributes = sample_attributes(bird_class, np.random.default_rng(1))
    assert class_key(attributes) == tuple(bird_class)


def test_patch_attribute_targets_match_a_naive_loop():
    rng = np.random.default_rng(3)
    images = [sample_attributes(all_classes()[i], rng) for i in (0, 400)]
    attributes = attribute_targets(images)
    patch_parts = torch.tensor([[0, 1, 2, 3, 4, 2], [4, 4, 0, 1, 3, 3]])
    shape_words = [(part, word) for part in PART_NAMES for word in PART_SHAPES[part]]
    expected = torch.full((2, 6, 3), -100)
    for b, image in enumerate(images):
        for position, part_id in enumerate(patch_parts[b].tolist()):
            if part_id:
                part = PART_NAMES[part_id - 1]
                index = part_id - 1
                expected[b, position, 0] = 8 * index + attribute_vocabulary(part, "color").index(image[part]["color"])
                expected[b, position, 1] = 4 * index + attribute_vocabulary(part, "pattern").index(image[part]["pattern"])
                expected[b, position, 2] = shape_words.index((part, image[part]["shape"]))
    assert torch.equal(patch_attribute_targets(patch_parts, attributes), expected)
    assert len(ATTRIBUTE_SLOTS) == 12


class _OracleCLIP:
    """Image features one-hot on an image's true word for one attribute, text features one-hot on the word: the
    attribute is read perfectly, the others follow from how the text features of their words are laid out."""

    def __init__(self, truth_words, read_kind):
        self.truth_words, self.read_kind = truth_words, read_kind

    def get_image_features(self, pixel_values):
        part, kind = self.read_kind
        words = attribute_vocabulary(part, kind)
        rows = torch.stack([F.one_hot(torch.tensor(words.index(w)), 16).float() for w in self.truth_words])
        return type("Out", (), {"pooler_output": rows[: len(pixel_values)]})()

    def get_text_features(self, input_ids, attention_mask=None):
        count = len(input_ids)
        return type("Out", (), {"pooler_output": torch.eye(16)[:count] + 1e-3})()


def test_attribute_zero_shot_scores_each_attribute_against_its_vocabulary():
    rng = np.random.default_rng(0)
    images = [sample_attributes(all_classes()[i], rng) for i in range(0, 768, 24)]
    kind = ("head", "color")
    oracle = _OracleCLIP([image["head"]["color"] for image in images], kind)
    scores = attribute_zero_shot(oracle, torch.zeros(len(images), 3, 8, 8, dtype=torch.uint8), images)
    assert set(scores) == {f"{part} {kind}" for part, kind in ATTRIBUTE_PROMPTS} == {
        f"{part} {kind}" for part, kind in CLASS_ATTRIBUTES
    }
    assert scores["head color"] == 100.0
    # the same one-hot image features read as body colours: right exactly where head and body colours coincide
    same = np.mean([image["head"]["color"] == image["body"]["color"] for image in images]) * 100
    assert abs(scores["body color"] - same) < 1e-4


def test_block_masks():
    masks = sample_block_masks(3, grid_size=8, mask_ratio=0.5, block=2, generator=torch.Generator().manual_seed(0))
    assert masks.shape == (3, 64) and (masks.sum(1) == 32).all()
    grid = masks.view(3, 4, 2, 4, 2)
    assert (grid == grid[:, :, :1, :, :1]).all()  # constant over each 2 x 2 block


def test_patchify_follows_patch_token_order():
    pixel_values = torch.arange(2 * 3 * 16 * 16, dtype=torch.float32).view(2, 3, 16, 16)
    patches = patchify(pixel_values, 8)
    assert patches.shape == (2, 4, 8 * 8 * 3)
    torch.testing.assert_close(patches[1, 1].view(8, 8, 3).permute(2, 0, 1), pixel_values[1, :, :8, 8:])


def test_patch_part_labels_and_flips():
    part_masks = torch.zeros(1, 16, 16, dtype=torch.uint8)
    part_masks[0, :8, 8:] = 2  # top-right patch: body
    part_masks[0, 8:, :8][:5] = 1  # bottom-left patch: 40 of 64 pixels head
    labels = patch_part_labels(part_masks, 8)
    assert labels.tolist() == [[0, 2, 1, 0]]
    flips = torch.tensor([True])
    flipped_masks = flip_images(part_masks[:, None], flips)[:, 0]
    assert flip_patch_grid(labels, flips, 2).tolist() == patch_part_labels(flipped_masks, 8).tolist()


def test_mean_patch_attribute_loss_reads_the_pooled_patches_with_the_cls_classifier():
    torch.manual_seed(0)
    weights = {"part_loss_weight": 0.0, "attribute_loss_weight": 0.0}
    with_cls_only = Dinov2Pretraining(tiny_dinov2_config(), **weights, mean_patch_attribute_loss_weight=0.0)
    with_pooled = Dinov2Pretraining(tiny_dinov2_config(), **weights, mean_patch_attribute_loss_weight=0.7)
    with_pooled.load_state_dict(with_cls_only.state_dict())
    pixel_values = torch.randn(3, 3, 64, 64)
    masks = torch.zeros(3, 64, dtype=torch.bool)
    patch_parts = torch.randint(0, 5, (3, 64))
    attributes = torch.stack([torch.randint(0, size, (3,)) for size in with_cls_only.vocabulary_sizes], dim=1)
    hidden = with_cls_only.encoder(pixel_values=pixel_values).last_hidden_state
    pooled = hidden[:, 1 + with_cls_only.encoder.config.num_register_tokens :].mean(1)
    logits = with_cls_only.attribute_classifier(pooled).split(with_cls_only.vocabulary_sizes, dim=-1)
    expected = sum(F.cross_entropy(slot, attributes[:, i]) for i, slot in enumerate(logits)) / 12
    extra = with_pooled(pixel_values, masks, patch_parts, attributes) - with_cls_only(
        pixel_values, masks, patch_parts, attributes
    )
    torch.testing.assert_close(extra, 0.7 * expected)


def test_patch_supervision_loss_matches_a_per_patch_loop():
    torch.manual_seed(0)
    patch_parts = torch.tensor([[0, 1, 2, 3], [4, 4, 0, 2]])
    attributes = torch.stack([torch.randint(0, len(attribute_vocabulary(*slot)), (2,)) for slot in ATTRIBUTE_SLOTS], 1)
    logits = torch.randn(2, 4, 5 + 32 + 16 + 10)
    targets = patch_attribute_targets(patch_parts, attributes)
    part_terms, kind_terms = [], [[], [], []]
    for image in range(2):
        for patch in range(4):
            part_logits, colour, pattern, shape = logits[image, patch].split([5, 32, 16, 10])
            part_terms.append(F.cross_entropy(part_logits[None], patch_parts[image, patch][None]))
            if patch_parts[image, patch] > 0:
                for kind, kind_logits in enumerate((colour, pattern, shape)):
                    kind_terms[kind].append(F.cross_entropy(kind_logits[None], targets[image, patch, kind][None]))
    expected = torch.stack(part_terms).mean() + sum(torch.stack(terms).mean() for terms in kind_terms) / 3
    torch.testing.assert_close(patch_supervision_loss(logits, patch_parts, attributes), expected)


def test_pretraining_runs_a_few_steps():
    settings = replace(
        PretrainingSettings(), num_images=8, batch_size=4, clip_epochs=2, dinov2_epochs=1, clip_group_size=2
    )
    data = render_pretraining_images(8, seed=0, config=ConceptWorldConfig())
    assert data.images.shape == (8, 3, 64, 64) and data.patch_parts.shape == (8, 64) and len(data.styles) == 8
    calls = []
    clip, clip_losses = train_clip(data, settings, on_epoch_end=lambda m, e, l: calls.append((e, list(l), m.training)))
    assert calls == [(0, clip_losses[:1], False), (1, clip_losses, False)]
    dinov2, dinov2_losses = train_dinov2(data, settings)
    clip_losses = clip_losses[:1]
    assert isinstance(clip, CLIPModel) and isinstance(dinov2, Dinov2WithRegistersModel)
    assert len(clip_losses) == len(dinov2_losses) == 1 and np.isfinite(clip_losses + dinov2_losses).all()
