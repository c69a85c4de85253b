"""Training-time data augmentation of each method's recipe, with torch ops (no torchvision).

* the CLIP methods (family ``"clip"`` of :class:`~peft_interp.registry.MethodSpec`: CoOp, CoCoOp, KgCoOp, MaPLe,
  PromptSRC, IPL, IntCoOp, DualViewMI): random resized crop (scale ``(0.08, 1)``, aspect ``(3/4, 4/3)``,
  bicubic) and a horizontal flip with probability 0.5, the ``random_resized_crop`` + ``random_flip`` transforms of
  the CoOp code base's configs (Dassl's defaults);
* the visual methods (family ``"vision"``: IVPT, VPT-deep): the official IVPT code's ``cub_original`` training
  transform (``make_train_transforms``): shorter side resized to ``S`` (bilinear), horizontal flip with probability
  0.5, random affine (rotation up to +-90 degrees, translation up to 20 % of each side, scale 0.8-1.2; nearest
  neighbour, black fill), random ``S x S`` crop. (Its ``ColorJitter()`` has no arguments, so it changes nothing
  and is left out.)

Random numbers come from torch's global generator, which the trainer seeds and saves in its checkpoints, so a
resumed run draws the same augmentations as an uninterrupted one. Evaluation never augments.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..data.preprocessing import IMAGENET_MEAN, IMAGENET_STD, standardize
from ..registry import registered_methods


def to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL image -> ``(3, H, W)`` float in [0, 1]."""
    array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255.0


def resize(image: torch.Tensor, size: tuple[int, int], mode: str = "bicubic") -> torch.Tensor:
    """``(3, H, W)`` -> ``(3, *size)`` with antialiasing, clamped to [0, 1]."""
    resized = F.interpolate(image[None], size=size, mode=mode, antialias=True, align_corners=False)[0]
    return resized.clamp(0.0, 1.0)


def _uniform(low: float, high: float) -> float:
    return low + (high - low) * torch.rand(()).item()


def random_resized_crop_box(
    height: int, width: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), attempts: int = 10
) -> tuple[int, int, int, int]:
    """``(top, left, h, w)``: an area fraction drawn from ``scale`` and a log-uniform aspect ratio from ``ratio``;
    after ``attempts`` misses, the largest centred box with an aspect inside ``ratio``."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(attempts):
        target = area * _uniform(*scale)
        aspect = math.exp(_uniform(*log_ratio))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, ()).item())
            left = int(torch.randint(0, width - w + 1, ()).item())
            return top, left, h, w
    aspect = width / height
    if aspect < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif aspect > ratio[1]:
        w, h = round(height * ratio[1]), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def affine(image: torch.Tensor, angle: float, translate: tuple[float, float], scale: float) -> torch.Tensor:
    """``(3, H, W)`` rotated by ``angle`` degrees about its centre, scaled by ``scale`` and shifted by ``translate``
    ``(dx, dy)`` pixels; nearest neighbour, zero (black) outside the image.

    Output pixel ``p`` (centred pixel coordinates) reads input ``q = R(-angle) (p - t) / scale``."""
    _, height, width = image.shape
    radians = math.radians(angle)
    cos, sin = math.cos(radians), math.sin(radians)
    inverse = torch.tensor([[cos, sin], [-sin, cos]], dtype=torch.float64) / scale  # R(-angle) / scale, pixels
    shift = -inverse @ torch.tensor(translate, dtype=torch.float64)
    half = torch.tensor([width / 2, height / 2], dtype=torch.float64)
    theta = torch.cat([inverse * half[None, :] / half[:, None], (shift / half)[:, None]], dim=1)  # normalised
    grid = F.affine_grid(theta[None].float(), [1, 3, height, width], align_corners=False)
    return F.grid_sample(image[None], grid, mode="nearest", padding_mode="zeros", align_corners=False)[0]


@dataclass
class CoOpTrainTransform:
    """PIL image -> normalised ``(3, S, S)``: random resized crop, bicubic resize, horizontal flip."""

    image_size: int
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_probability: float = 0.5

    def __call__(self, image: Image.Image) -> torch.Tensor:
        pixels = to_tensor(image)
        top, left, h, w = random_resized_crop_box(*pixels.shape[1:], self.scale, self.ratio)
        pixels = resize(pixels[:, top : top + h, left : left + w], (self.image_size, self.image_size))
        if torch.rand(()).item() < self.flip_probability:
            pixels = pixels.flip(-1)
        return standardize(pixels, self.mean, self.std)


@dataclass
class IVPTTrainTransform:
    """PIL image -> normalised ``(3, S, S)``: the official IVPT training transform (see the module docstring)."""

    image_size: int
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    flip_probability: float = 0.5
    degrees: float = 90.0
    translate: tuple[float, float] = (0.2, 0.2)
    scale: tuple[float, float] = (0.8, 1.2)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        pixels = to_tensor(image)
        height, width = pixels.shape[1:]
        short = min(height, width)
        size = (max(self.image_size, int(self.image_size * height / short)),
                max(self.image_size, int(self.image_size * width / short)))  # fmt: skip
        pixels = resize(pixels, size, mode="bilinear")
        if torch.rand(()).item() < self.flip_probability:
            pixels = pixels.flip(-1)
        height, width = size
        angle = _uniform(-self.degrees, self.degrees)
        shift = (round(_uniform(-1, 1) * self.translate[0] * width), round(_uniform(-1, 1) * self.translate[1] * height))
        pixels = affine(pixels, angle, shift, _uniform(*self.scale))
        top = int(torch.randint(0, height - self.image_size + 1, ()).item())
        left = int(torch.randint(0, width - self.image_size + 1, ()).item())
        pixels = pixels[:, top : top + self.image_size, left : left + self.image_size]
        return standardize(pixels, self.mean, self.std)


def recipe_train_transform(method: str, image_size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """The training transform of ``method``'s recipe: CoOp's for the CLIP methods, IVPT's for the visual ones."""
    methods = registered_methods()
    if method not in methods:
        raise ValueError(f"no training augmentation is defined for method {method!r}; known: {tuple(methods)}")
    transform = CoOpTrainTransform if methods[method].family == "clip" else IVPTTrainTransform
    return transform(image_size, tuple(mean), tuple(std))
