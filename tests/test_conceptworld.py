"""Tests of the ConceptWorld synthetic dataset: determinism, ground-truth geometry, splits, features."""

import random

import numpy as np
import pytest

from peft_interp.data.conceptworld import (
    ATTRIBUTE_KINDS,
    CLASS_ATTRIBUTES,
    COLORS,
    PART_IDS,
    PART_NAMES,
    SPLITS,
    ConceptWorldConfig,
    RandomAffine,
    affine_matrix,
    all_attribute_words,
    all_classes,
    apply_affine,
    attribute_vocabulary,
    class_ids,
    class_names,
    load_conceptworld,
    render_sample,
    sample_rng,
    split_classes,
)


IMAGE_SIZE = 64


def render(class_id: int, index: int = 0, seed: int = 0, stream: str = "train", config=None):
    return render_sample(all_classes()[class_id], sample_rng(seed, stream, class_id, index), config)


@pytest.fixture(scope="module")
def rendered_samples():
    """160 samples spread over all classes, rendered without the Dataset wrapper (fast)."""
    return [render(class_id=(7 * index) % 768, index=index) for index in range(160)]


@pytest.fixture(scope="module")
def base_train_2_shots():
    return load_conceptworld("base_train", shots=2, seed=3)


def assert_keypoints_on_parts(part_masks, keypoints, visible):
    for part_index, part in enumerate(PART_NAMES):
        if visible[part_index]:
            x, y = keypoints[part_index]
            assert part_masks[y, x] == PART_IDS[part], f"{part} keypoint ({x}, {y}) is off its mask"
        else:
            assert tuple(keypoints[part_index]) == (-1, -1)


def interior_pixels(mask):
    """Pixels of `mask` whose four neighbours are in `mask` too."""
    padded = np.pad(mask, 1)
    return mask & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]


# ----------------------------------------------------------------------------------------------------------------
# Determinism
# ----------------------------------------------------------------------------------------------------------------


def test_same_seed_gives_byte_identical_dataset():
    first = load_conceptworld("novel_test", num_images=10, seed=5)
    np.random.seed(123)  # global random state must not matter
    random.seed(123)
    second = load_conceptworld("novel_test", num_images=10, seed=5)
    assert first.data.table.equals(second.data.table)  # PNG bytes, masks, keypoints, captions, ...


def test_different_seed_gives_different_images():
    first = render(class_id=10, seed=0)
    second = render(class_id=10, seed=1)
    assert not np.array_equal(first["image"], second["image"])
    assert not np.array_equal(first["part_masks"], second["part_masks"])


def test_image_depends_only_on_its_address():
    """An image is the same whichever split or dataset size it is generated in; only its label changes."""
    short = load_conceptworld("base_test", num_images=3, seed=2).with_format("numpy")
    longer = load_conceptworld("base_test", num_images=6, seed=2).with_format("numpy")
    downstream = load_conceptworld("downstream_test", num_images=3, seed=2).with_format("numpy")
    for index in range(3):
        assert np.array_equal(short[index]["image"], longer[index]["image"])
        assert np.array_equal(short[index]["image"], downstream[index]["image"])  # base classes come first
        assert short[index]["class_name"] == downstream[index]["class_name"]


def test_train_and_test_streams_differ():
    train = render(class_id=3, stream="train")
    test = render(class_id=3, stream="test")
    assert not np.array_equal(train["image"], test["image"])


# ----------------------------------------------------------------------------------------------------------------
# Ground-truth geometry
# ----------------------------------------------------------------------------------------------------------------


def test_keypoints_lie_inside_their_part_masks(rendered_samples):
    for sample in rendered_samples:
        assert sample["keypoints_visible"].all()
        assert_keypoints_on_parts(sample["part_masks"], sample["keypoints"], sample["keypoints_visible"])


def test_every_part_is_visible_and_the_bird_fits_in_the_image(rendered_samples):
    for sample in rendered_samples:
        part_masks = sample["part_masks"]
        assert part_masks.shape == (IMAGE_SIZE, IMAGE_SIZE) and part_masks.dtype == np.uint8
        assert set(np.unique(part_masks)) == {0, *PART_IDS.values()}
        border = np.concatenate([part_masks[0], part_masks[-1], part_masks[:, 0], part_masks[:, -1]])
        assert not border.any(), "the bird touches the image border"


def test_plain_parts_are_painted_in_their_color(rendered_samples):
    for sample in rendered_samples[:60]:
        for part, attributes in sample["attributes"].items():
            if attributes["pattern"] != "plain":
                continue
            interior = interior_pixels(sample["part_masks"] == PART_IDS[part])  # the outline is darker
            if interior.sum() < 3:
                continue
            pixels = sample["image"][interior].astype(float)
            expected = np.array(COLORS[attributes["color"]])
            assert np.abs(np.median(pixels, axis=0) - expected).max() < 25, (part, attributes)


def test_keypoints_stay_on_their_parts_after_random_augmentation(rendered_samples):
    augment = RandomAffine(max_rotation=180, scale_range=(0.5, 1.5), max_translation=0.3, flip_probability=0.5)
    rng = np.random.default_rng(0)
    num_hidden = 0
    for sample in rendered_samples[:40]:
        for _ in range(5):
            matrix = augment.sample_matrix(rng, IMAGE_SIZE)
            augmented = apply_affine(sample, matrix)
            assert augmented["image"].shape == sample["image"].shape and augmented["image"].dtype == np.uint8
            assert_keypoints_on_parts(augmented["part_masks"], augmented["keypoints"], augmented["keypoints_visible"])
            # Snapping onto the resampled mask moves a keypoint by about a pixel at most (more when shrinking).
            mapped = sample["keypoints"] @ matrix[:, :2].T + matrix[:, 2]
            moved = np.linalg.norm(augmented["keypoints"] - mapped, axis=1)[augmented["keypoints_visible"]]
            assert (moved <= 2.0).all()
            num_hidden += int((~augmented["keypoints_visible"]).sum())
    assert num_hidden > 0, "strong translations should push some keypoints out of the image"


@pytest.mark.parametrize(
    "transform",
    [
        dict(flip=True),
        dict(rotation=90.0),
        dict(rotation=-37.0, scale=0.5),
        dict(rotation=15.0, scale=1.8),
        dict(translation=(20.0, -11.0)),
    ],
    ids=["flip", "rotate90", "shrink", "enlarge", "shift"],
)
def test_keypoints_stay_on_their_parts_after_each_augmentation(rendered_samples, transform):
    matrix = affine_matrix(IMAGE_SIZE, **transform)
    for sample in rendered_samples[:30]:
        augmented = apply_affine(sample, matrix)
        assert_keypoints_on_parts(augmented["part_masks"], augmented["keypoints"], augmented["keypoints_visible"])


def test_flip_and_identity_are_exact(rendered_samples):
    sample = rendered_samples[0]
    identity = apply_affine(sample, affine_matrix(IMAGE_SIZE))
    assert np.array_equal(identity["image"], sample["image"])
    assert np.array_equal(identity["part_masks"], sample["part_masks"])
    assert np.array_equal(identity["keypoints"], sample["keypoints"])

    flipped = apply_affine(sample, affine_matrix(IMAGE_SIZE, flip=True))
    assert np.array_equal(flipped["part_masks"], sample["part_masks"][:, ::-1])
    assert np.abs(flipped["image"].astype(int) - sample["image"][:, ::-1]).max() <= 1
    expected_x = IMAGE_SIZE - 1 - sample["keypoints"][:, 0]
    assert np.array_equal(flipped["keypoints"], np.stack([expected_x, sample["keypoints"][:, 1]], axis=1))


def test_keypoints_leaving_the_image_become_invisible(rendered_samples):
    augmented = apply_affine(rendered_samples[0], affine_matrix(IMAGE_SIZE, translation=(IMAGE_SIZE, 0.0)))
    assert not augmented["keypoints_visible"].any()
    assert (augmented["keypoints"] == -1).all()
    assert not augmented["part_masks"].any()


def test_batch_transform_on_a_dataset(base_train_2_shots):
    dataset = base_train_2_shots.select(range(4))
    dataset.set_transform(RandomAffine().batch_transform(seed=0))
    batch = dataset[:4]
    assert len(batch["image"]) == 4 and batch["image"][0].size == (IMAGE_SIZE, IMAGE_SIZE)
    assert batch["label"] == [0, 1, 2, 3]
    for part_masks, keypoints, visible in zip(
        batch["part_masks"], batch["keypoints"], batch["keypoints_visible"], strict=True
    ):
        assert_keypoints_on_parts(part_masks, keypoints, visible)


# ----------------------------------------------------------------------------------------------------------------
# Classes and splits
# ----------------------------------------------------------------------------------------------------------------


def test_class_splits_are_disjoint_and_cover_all_classes():
    pretraining, base, novel = (set(class_ids(split)) for split in ("pretraining", "base_train", "novel_train"))
    assert len(base) == len(novel) == 50 and len(pretraining) == 768 - 100
    assert not pretraining & base and not pretraining & novel and not base & novel
    assert pretraining | base | novel == set(range(768))
    assert class_ids("downstream_test") == class_ids("base_test") + class_ids("novel_test")
    assert class_names("base_train") == class_names("base_test")
    assert len(set(class_names("pretraining"))) == 668


def test_class_split_follows_its_seed():
    assert set(class_ids("base_train")) != set(class_ids("base_train", ConceptWorldConfig(class_split_seed=1)))
    assert len(class_ids("novel_test", ConceptWorldConfig(num_downstream_classes=20))) == 10


def test_novel_attribute_words_are_seen_in_pretraining():
    """Novel classes are new combinations of attribute values that pretraining shows."""
    pretraining_classes = split_classes("pretraining")
    for slot in range(len(CLASS_ATTRIBUTES)):
        assert {bird_class[slot] for bird_class in pretraining_classes} == set(
            attribute_vocabulary(*CLASS_ATTRIBUTES[slot])
        )


def test_pretraining_split_holds_only_pretraining_classes():
    dataset = load_conceptworld("pretraining", num_images=20, seed=1)
    downstream = set(class_names("downstream_train"))
    assert not set(dataset["class_name"]) & downstream
    assert all(caption.endswith(".") for caption in dataset["caption"])


def test_few_shot_sampling(base_train_2_shots):
    labels = np.array(base_train_2_shots["label"])
    assert len(base_train_2_shots) == 2 * 50
    assert (np.bincount(labels, minlength=50) == 2).all()
    again = load_conceptworld("base_train", shots=2, seed=3)
    assert again.data.table.equals(base_train_2_shots.data.table)
    one_shot = load_conceptworld("base_train", shots=1, seed=3)
    assert one_shot.data.table.equals(base_train_2_shots.select(range(50)).data.table.combine_chunks())
    other_seed = load_conceptworld("base_train", shots=1, seed=4)
    assert one_shot["label"] == other_seed["label"]
    assert one_shot[0]["image"].tobytes() != other_seed[0]["image"].tobytes()


def test_invalid_arguments():
    with pytest.raises(ValueError, match="unknown split"):
        class_names("validation")
    with pytest.raises(ValueError, match="either"):
        load_conceptworld("base_train", num_images=4, shots=1)
    with pytest.raises(ValueError):
        ConceptWorldConfig(num_downstream_classes=7)


# ----------------------------------------------------------------------------------------------------------------
# Dataset features
# ----------------------------------------------------------------------------------------------------------------


def test_dataset_columns_and_features(base_train_2_shots):
    dataset = base_train_2_shots
    assert dataset.column_names == [
        "image",
        "label",
        "class_name",
        "caption",
        "attributes",
        "keypoints",
        "keypoints_visible",
        "part_masks",
        "pose",
        "style",
    ]
    assert set(dataset["style"]) == {"painting"}  # the default downstream style
    assert dataset.features["label"].names == class_names("base_train")
    assert dataset.features["part_masks"].shape == (IMAGE_SIZE, IMAGE_SIZE)
    assert dataset.features["keypoints"].shape == (4, 2)

    assert dataset.features["part_masks"].dtype == "uint8" and dataset.features["keypoints"].dtype == "int32"
    sample = dataset.with_format("numpy")[0]
    assert sample["part_masks"].shape == (IMAGE_SIZE, IMAGE_SIZE) and sample["keypoints"].shape == (4, 2)
    row = dataset[5]
    assert row["image"].mode == "RGB" and row["image"].size == (IMAGE_SIZE, IMAGE_SIZE)
    assert row["class_name"] == class_names("base_train")[row["label"]]
    assert set(row["attributes"]) == set(PART_NAMES)
    bird_class = split_classes("base_train")[row["label"]]
    for (part, kind), word in bird_class.fixed_attributes().items():
        assert row["attributes"][part][kind] == word
    for part in PART_NAMES:
        for kind in ATTRIBUTE_KINDS:
            assert row["attributes"][part][kind] in attribute_vocabulary(part, kind)
    assert bird_class.head_color in row["caption"] and bird_class.tail_shape in row["caption"]
    assert 0.0 < row["pose"]["scale"] and isinstance(row["pose"]["flipped"], bool)


def test_painting_keeps_the_bird_and_its_colours_and_replaces_the_background():
    """Same address, two styles: the same bird in the same pose (masks and keypoints identical); bird pixels moved 30%
    toward the paper colour (exactly, before noise: compared with noise switched off); the background is paper."""
    config = ConceptWorldConfig(noise_std=0.0)
    bird_class = all_classes()[123]
    photo = render_sample(bird_class, sample_rng(0, "train", 123, 0), config, "photo")
    painting = render_sample(bird_class, sample_rng(0, "train", 123, 0), config, "painting")
    assert np.array_equal(photo["part_masks"], painting["part_masks"])
    assert np.array_equal(photo["keypoints"], painting["keypoints"]) and painting["style"] == "painting"
    bird = photo["part_masks"] > 0
    padded = np.pad(bird, 2)  # pixels two away from the outline ring drawn around the bird
    ring_free = bird & padded[2:-2, :-4] & padded[2:-2, 4:] & padded[:-4, 2:-2] & padded[4:, 2:-2]
    paper = np.array([236.0, 224.0, 200.0])
    expected = photo["image"][ring_free].astype(float) + 0.3 * (paper - photo["image"][ring_free])
    np.testing.assert_allclose(painting["image"][ring_free], expected, atol=1.0)
    background = painting["image"][~bird & ~np.pad(bird, 1)[1:-1, 2:]].astype(float)
    assert np.abs(background.mean(0) - paper).max() < 30  # a paper wash, not the photo's random colour


def test_styles_follow_the_config_and_the_image_address():
    config = ConceptWorldConfig(pretraining_style_fraction=0.5)
    pretraining = load_conceptworld("pretraining", num_images=200, config=config)["style"]
    assert 60 < pretraining.count("painting") < 140 and set(pretraining) == {"photo", "painting"}
    assert load_conceptworld("pretraining", num_images=200, config=config)["style"] == pretraining
    photos = load_conceptworld("base_test", shots=1, config=ConceptWorldConfig(downstream_style="photo"))
    assert set(photos["style"]) == {"photo"}
    with pytest.raises(ValueError, match="downstream_style"):
        ConceptWorldConfig(downstream_style="sketch")
    with pytest.raises(ValueError, match="pretraining_style_fraction"):
        ConceptWorldConfig(pretraining_style_fraction=1.5)


def test_class_name_and_caption_format():
    bird_class = all_classes()[0]._replace(head_color="red", body_color="orange", wing_pattern="striped")
    assert bird_class.name == "red-headed orange-bodied striped-winged long-tailed bird"
    assert bird_class.description == "a red head, an orange body, striped wings and a long tail"


def test_image_size_is_configurable():
    dataset = load_conceptworld("novel_train", num_images=2, image_size=32).with_format("numpy")
    assert dataset[0]["image"].shape == (32, 32, 3)
    assert dataset[0]["part_masks"].shape == (32, 32)
    assert_keypoints_on_parts(dataset[1]["part_masks"], dataset[1]["keypoints"], dataset[1]["keypoints_visible"])


def test_attribute_words_are_single_clip_tokens():
    from peft_interp.data.tokenizer import load_clip_tokenizer

    tokenizer = load_clip_tokenizer()
    words = all_attribute_words() + list(PART_NAMES) + ["wings", "bird"]
    for word in words:
        assert len(tokenizer.tokenize(word)) == 1, word
    longest_caption = max((f"a photo of a bird with {c.description}." for c in all_classes()), key=len)
    assert len(tokenizer(longest_caption)["input_ids"]) < tokenizer.model_max_length


def test_splits_constant_lists_every_split():
    for split in SPLITS:
        assert class_names(split)
