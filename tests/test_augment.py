"""Training augmentations (torch ops): geometry against hand-computed expectations, determinism, and the
bounding-box crop of the part protocol."""

import numpy as np
import pytest
import torch
from PIL import Image

from peft_interp.training.augment import (
    CoOpTrainTransform,
    IVPTTrainTransform,
    affine,
    random_resized_crop_box,
    recipe_train_transform,
    to_tensor,
)
from peft_interp.training.data import ImageCollator, ImageTransform, crop_to_box


def test_random_resized_crop_boxes_respect_scale_and_ratio():
    torch.manual_seed(0)
    height, width = 60, 80
    fractions, aspects = [], []
    for _ in range(400):
        top, left, h, w = random_resized_crop_box(height, width, (0.25, 0.5), (0.8, 1.25))
        assert 0 <= top and top + h <= height and 0 <= left and left + w <= width
        fractions.append(h * w / (height * width))
        aspects.append(w / h)
    # rounding to whole pixels moves the area and the aspect a little outside the drawn ranges
    assert 0.23 <= min(fractions) and max(fractions) <= 0.52 and np.std(fractions) > 0.05
    assert 0.75 <= min(aspects) and max(aspects) <= 1.33
    assert random_resized_crop_box(10, 100, (0.99, 1.0), (1.0, 1.0)) == (0, 45, 10, 10)  # fallback: centred square


def test_affine_rotation_translation_scale_by_hand():
    image = torch.arange(2 * 6 * 6, dtype=torch.float32).reshape(2, 6, 6)[:, None].expand(2, 3, 6, 6)[0]
    assert torch.equal(affine(image, 0.0, (0, 0), 1.0), image)
    rotated = affine(image, 90.0, (0, 0), 1.0)
    assert torch.equal(rotated, torch.rot90(image, k=-1, dims=(1, 2)))  # a quarter turn (clockwise), pixel for pixel
    shifted = affine(image, 0.0, (2, 1), 1.0)  # output (x, y) reads input (x - 2, y - 1)
    assert torch.equal(shifted[:, 1:, 2:], image[:, :-1, :-2])
    assert shifted[:, :1].abs().sum() == 0 and shifted[:, :, :2].abs().sum() == 0  # black fill
    zoomed = affine(image, 0.0, (0, 0), 2.0)  # output column x reads input column round(3 + (x + 0.5 - 3) / 2 - 0.5)
    assert torch.equal(zoomed[:, 3], image[:, 3, [1, 2, 2, 3, 3, 4]])


def picture(width=40, height=30):
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))


@pytest.mark.parametrize("transform_cls", [CoOpTrainTransform, IVPTTrainTransform])
def test_train_transforms_are_random_seeded_and_the_right_size(transform_cls):
    transform = transform_cls(16)
    torch.manual_seed(3)
    first = [transform(picture()) for _ in range(3)]
    torch.manual_seed(3)
    again = [transform(picture()) for _ in range(3)]
    assert all(a.shape == (3, 16, 16) for a in first)
    assert all(torch.equal(a, b) for a, b in zip(first, again))  # the global RNG drives it (saved in checkpoints)
    assert not torch.equal(first[0], first[1])  # and it does augment
    plain = ImageTransform(16)(picture())
    assert not any(torch.allclose(a, plain) for a in first)


def test_coop_transform_without_randomness_is_resize_and_flip():
    transform = CoOpTrainTransform(16, scale=(1.0, 1.0), ratio=(40 / 30, 40 / 30), flip_probability=1.0)
    out = transform(picture())
    pixels = to_tensor(picture())
    expected = torch.nn.functional.interpolate(pixels[None], size=(16, 16), mode="bicubic", antialias=True)[0]
    expected = ((expected.clamp(0, 1).flip(-1) - torch.tensor(transform.mean)[:, None, None])
                / torch.tensor(transform.std)[:, None, None])  # fmt: skip
    torch.testing.assert_close(out, expected)


def test_recipe_transform_per_method():
    from peft_interp.registry import registered_methods

    for method, spec in registered_methods().items():  # every registered method has one
        expected = IVPTTrainTransform if spec.family == "vision" else CoOpTrainTransform
        assert isinstance(recipe_train_transform(method, 32), expected)
    assert isinstance(recipe_train_transform("ivpt", 32), IVPTTrainTransform)
    assert isinstance(recipe_train_transform("coop", 32), CoOpTrainTransform)
    with pytest.raises(ValueError, match="no training augmentation is defined for method 'linear'"):
        recipe_train_transform("linear", 32)


def test_collator_crops_to_the_box_column():
    image = np.zeros((30, 40, 3), dtype=np.uint8)
    image[10:20, 5:25] = 255  # a white 20 x 10 box
    rows = [{"image": Image.fromarray(image), "label": 1, "crop_box": [5.0, 10.0, 20.0, 10.0]}]
    batch = ImageCollator(ImageTransform(8, mean=(0, 0, 0), std=(1, 1, 1)), box_column="crop_box")(rows)
    torch.testing.assert_close(batch["pixel_values"], torch.ones(1, 3, 8, 8), atol=0.02, rtol=0)  # only the box
    assert crop_to_box(Image.fromarray(image), [5, 10, 20, 10], 8).size == (8, 8)
