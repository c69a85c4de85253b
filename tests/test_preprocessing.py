"""The one image preprocessor (`peft_interp.data.preprocessing`): statistics from the checkpoint's own
preprocessor_config.json, and pixel values identical to the formulas each path used before it was shared."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import AutoModel

from peft_interp.data import load_conceptworld
from peft_interp.data.preprocessing import (
    ImageTransform,
    image_statistics,
    image_transform,
    normalize,
    processor_statistics,
    standardize,
)
from peft_interp.shipped import checkpoint_path, default_tokenizer, load_default
from peft_interp.tuners.intcoop.attributes import ZeroShotAttributes
from tests.tiny_models import make_backbone

# The values and formulas as they were written out before the preprocessing was shared.
OLD_IMAGENET = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
OLD_CLIP = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def old_image_transform(image: Image.Image, size: int, mean, std) -> torch.Tensor:
    """training/data.py's ImageTransform (PIL resize and crop, numpy normalisation)."""
    image = image.convert("RGB")
    if image.size != (size, size):
        scale = size / min(image.size)
        image = image.resize((max(size, round(image.width * scale)), max(size, round(image.height * scale))), Image.BICUBIC)
        left, top = (image.width - size) // 2, (image.height - size) // 2
        image = image.crop((left, top, left + size, top + size))
    scaled = np.asarray(image, dtype=np.uint8).astype(np.float32) / 255.0
    normalised = (scaled - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return torch.from_numpy(normalised.transpose(2, 0, 1).copy())


def old_clip_transform(images: list, size: int) -> torch.Tensor:
    """IntCoOp's clip_transform (torch bicubic resize, CLIP's mean and std typed in)."""
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073])[:, None, None]
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711])[:, None, None]
    pixels = []
    for image in images:
        array = torch.from_numpy(np.asarray(image.convert("RGB") if hasattr(image, "convert") else image).copy())
        chw = array.permute(2, 0, 1).float()[None] / 255
        chw = F.interpolate(chw, size=(size, size), mode="bicubic", align_corners=False)[0]
        pixels.append((chw.clamp(0, 1) - mean) / std)
    return torch.stack(pixels)


def random_image(width: int, height: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    shape = (height, width, 3) if mode == "RGB" else (height, width)
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode)


@pytest.fixture(scope="module")
def shipped():
    return {name: load_default(name) for name in ("clip", "dinov2")}


@pytest.fixture(scope="module")
def conceptworld_images():
    return list(load_conceptworld("novel_test", num_images=3, seed=0, image_size=64)["image"])


@pytest.mark.parametrize("name, old", [("clip", OLD_CLIP), ("dinov2", OLD_IMAGENET)])
def test_shipped_backbones_use_the_mean_and_std_of_their_preprocessor_config(shipped, name, old):
    saved = json.loads((checkpoint_path(name) / "preprocessor_config.json").read_text())
    mean, std = image_statistics(shipped[name])  # the model records its portable name, not its folder
    assert (mean, std) == (tuple(saved["image_mean"]), tuple(saved["image_std"])) == old


@pytest.mark.parametrize("name, old", [("clip", OLD_CLIP), ("dinov2", OLD_IMAGENET)])
def test_shipped_backbones_pixels_are_identical_to_the_old_transform(shipped, conceptworld_images, name, old):
    transform = image_transform(shipped[name])
    assert transform.image_size == 64
    others = [random_image(50, 37), random_image(90, 64, seed=1), random_image(64, 64, "L", seed=2)]
    for image in conceptworld_images + others:
        assert torch.equal(transform(image), old_image_transform(image, 64, *old))
    pictures, pixels = transform.pictures_and_pixels(others)
    assert pictures.shape == (3, 64, 64, 3) and pixels.is_contiguous()
    assert torch.equal(pixels, torch.stack([old_image_transform(image, 64, *old) for image in others]))
    resized = image_transform(shipped[name], image_size=32)
    assert torch.equal(resized(others[0]), old_image_transform(others[0], 32, *old))


def test_intcoop_default_transform_is_the_old_one_at_the_model_size(shipped, conceptworld_images):
    source = ZeroShotAttributes(shipped["clip"], default_tokenizer(), vocabulary=["red", "blue"])
    arrays = [np.asarray(image) for image in conceptworld_images]
    expected = old_clip_transform(conceptworld_images, 64)
    assert torch.equal(source.transform(conceptworld_images), expected)
    assert torch.equal(source.transform(arrays), expected)  # (H, W, 3) uint8 arrays as well as PIL images


def test_a_model_folder_preprocessor_config_is_read_and_its_absence_falls_back(tmp_path):
    make_backbone("dinov2").save_pretrained(tmp_path)
    without = AutoModel.from_pretrained(tmp_path)
    assert processor_statistics(str(tmp_path)) is None
    assert image_statistics(without) == OLD_IMAGENET  # the family's: ImageNet for DINOv2
    assert image_statistics(make_backbone("clip")) == OLD_CLIP  # built from a config: no name, the family's
    config = {"image_processor_type": "BitImageProcessor", "image_mean": [0.5, 0.25, 0.0], "image_std": [0.5, 0.25, 2.0]}
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(config))
    model = AutoModel.from_pretrained(tmp_path)
    transform = image_transform(model)
    assert (transform.mean, transform.std, transform.image_size) == ((0.5, 0.25, 0.0), (0.5, 0.25, 2.0), 28)
    pixels = transform(Image.new("RGB", (28, 28), (255, 0, 102)))
    torch.testing.assert_close(pixels[:, 0, 0], torch.tensor([1.0, -1.0, 0.2]))  # (x / 255 - mean) / std
    config["image_std"] = [0.5]
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="image_std must hold 3 values"):
        image_statistics(model)


def test_pretraining_and_augmentation_normalisation_are_the_old_formulas():
    from scripts.pretrain import CLIP_MEAN_STD, DINOV2_MEAN_STD
    from scripts.pretrain import normalize as pretrain_normalize

    images = torch.randint(0, 256, (2, 3, 5, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    for mean_std, old in ((CLIP_MEAN_STD, OLD_CLIP), (DINOV2_MEAN_STD, OLD_IMAGENET)):
        mean, std = (torch.tensor(values, dtype=torch.float32).view(1, 3, 1, 1) for values in old)
        expected = (images.float() / 255.0 - mean) / std
        assert torch.equal(pretrain_normalize(images, mean_std), expected)
        assert torch.equal(normalize(images, *old), expected)
    pixels = images[0].float() / 255.0
    old_augment = (pixels - torch.tensor(OLD_CLIP[0])[:, None, None]) / torch.tensor(OLD_CLIP[1])[:, None, None]
    assert torch.equal(standardize(pixels, *OLD_CLIP), old_augment)


def test_image_transform_batch_takes_images_and_arrays():
    transform = ImageTransform(8, *OLD_CLIP)
    images = [random_image(8, 8, seed=3), random_image(12, 10, seed=4)]
    batch = transform.batch([images[0], np.asarray(images[1])])
    assert batch.shape == (2, 3, 8, 8)
    assert torch.equal(batch[1], old_image_transform(images[1], 8, *OLD_CLIP))
