"""Images -> model input, with the mean and std of the backbone's own image processor.

What every path does to an image before a model sees it, in one place (PIL and torch ops; no torchvision):

* :class:`ImageTransform` — PIL image -> ``(3, S, S)``: shorter side resized to ``S`` (bicubic), centre crop,
  rescaled to [0, 1] and standardised, as ``CLIPImageProcessor`` / ``BitImageProcessor`` do; used by the command
  line, evaluation, explanations and IntCoOp's zero-shot attribute labeller. :func:`image_transform` builds it for
  a model.
* :func:`normalize` (uint8 -> standardised) and :func:`standardize` ([0, 1] -> standardised): the last step of
  :class:`ImageTransform`, of the training augmentations (:mod:`peft_interp.training.augment`) and of the pretraining
  of the shipped backbones.

The mean and std are the ``image_mean`` / ``image_std`` of the checkpoint's ``preprocessor_config.json``
(:func:`image_statistics`), the file ``transformers``' image processors read; a model without one (built from a
config, or saved without its processor) gets its family's: OpenAI CLIP's for CLIP, ImageNet's for the rest
(:func:`normalization_for`), the values those processors hold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

IMAGENET_MEAN, IMAGENET_STD = tuple(IMAGENET_DEFAULT_MEAN), tuple(IMAGENET_DEFAULT_STD)
CLIP_MEAN, CLIP_STD = tuple(OPENAI_CLIP_MEAN), tuple(OPENAI_CLIP_STD)

SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})  # 16-bit PNG/TIFF greyscale (PIL reads as I)
CONVERTIBLE_MODES = frozenset({"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV", "La", "RGBa"}) | SIXTEEN_BIT_MODES


# ---------------------------------------------------------------------------------------------------- statistics
def normalization_for(model_type: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std a backbone family was trained with (CLIP's own, ImageNet's for the rest)."""
    return (CLIP_MEAN, CLIP_STD) if model_type.startswith("clip") else (IMAGENET_MEAN, IMAGENET_STD)


def processor_statistics(name_or_path: str | None) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """``(image_mean, image_std)`` of the ``preprocessor_config.json`` of a model folder, a Hub id or a shipped
    backbone's name (``peft-interp/conceptworld-clip``, ...); None when there is no such file or it holds no mean
    and std."""
    from transformers.image_processing_base import ImageProcessingMixin

    from ..shipped import checkpoint_path, shipped_backbone

    if not name_or_path:
        return None
    if shipped_backbone(name_or_path) is not None:
        name_or_path = str(checkpoint_path(name_or_path))
    try:
        config, _ = ImageProcessingMixin.get_image_processor_dict(name_or_path)
    except OSError:  # no preprocessor_config.json there (or not reachable offline)
        return None
    if "image_mean" not in config or "image_std" not in config:
        return None
    for field in ("image_mean", "image_std"):
        values = config[field]
        if not isinstance(values, (list, tuple)) or len(values) != 3:
            raise ValueError(f"preprocessor_config.json of {name_or_path}: {field} must hold 3 values (R, G, B), "
                             f"got {values!r}")  # fmt: skip
    return tuple(float(v) for v in config["image_mean"]), tuple(float(v) for v in config["image_std"])


def image_statistics(model) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std of ``model``'s image processor (:func:`processor_statistics` of its ``name_or_path``), else
    its family's (:func:`normalization_for`)."""
    statistics = processor_statistics(getattr(model, "name_or_path", None))
    return statistics or normalization_for(model.config.model_type)


# ------------------------------------------------------------------------------------------------------ tensors
def standardize(pixels: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(..., 3, H, W)`` float in [0, 1] -> ``(pixels - mean) / std`` per channel."""
    mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return (pixels - mean) / std


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 ``(..., 3, H, W)`` -> float32, as the image processors compute it: rescaled to [0, 1] (``/ 255``),
    then :func:`standardize`."""
    return standardize(images.float() / 255.0, mean, std)


# ------------------------------------------------------------------------------------------------------- images
def to_rgb(image: Image.Image) -> Image.Image:
    """``image`` as 8-bit RGB; 16-bit greyscale is scaled by 255 / 65535 (PIL's ``convert`` would clip at 255)."""
    if image.mode in SIXTEEN_BIT_MODES:
        values = np.asarray(image, dtype=np.int64)
        if values.min() < 0 or values.max() > 65535:
            raise ValueError(f"a mode-{image.mode} image holds values in [{values.min()}, {values.max()}], outside the "
                             "16-bit range [0, 65535]")  # fmt: skip
        return Image.fromarray(np.round(values * (255 / 65535)).astype(np.uint8), mode="L").convert("RGB")
    if image.mode not in CONVERTIBLE_MODES:
        raise ValueError(f"images of mode {image.mode!r} cannot be converted to RGB without guessing their range")
    return image.convert("RGB")


@dataclass
class ImageTransform:
    """PIL image -> normalised ``(3, S, S)``: shorter side resized to ``S`` (bicubic), centre crop."""

    image_size: int
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def to_array(self, image: Image.Image) -> np.ndarray:
        """The resized, cropped ``(S, S, 3)`` uint8 image (what the model sees, for pictures)."""
        image = to_rgb(image)
        if image.size != (self.image_size, self.image_size):
            scale = self.image_size / min(image.size)
            size = (max(self.image_size, round(image.width * scale)), max(self.image_size, round(image.height * scale)))
            image = image.resize(size, Image.BICUBIC)
            left, top = (image.width - self.image_size) // 2, (image.height - self.image_size) // 2
            image = image.crop((left, top, left + self.image_size, top + self.image_size))
        return np.asarray(image, dtype=np.uint8)

    def normalize(self, array: np.ndarray) -> torch.Tensor:
        """``(S, S, 3)`` uint8 -> normalised ``(3, S, S)`` float."""
        return normalize(torch.tensor(array).permute(2, 0, 1), self.mean, self.std).contiguous()

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.normalize(self.to_array(image))

    def batch(self, images: Sequence) -> torch.Tensor:
        """PIL images or ``(H, W, 3)`` uint8 arrays -> ``(N, 3, S, S)``."""
        return torch.stack([self(image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image)))
                            for image in images])  # fmt: skip

    def pictures_and_pixels(self, images: list[Image.Image]) -> tuple[np.ndarray, torch.Tensor]:
        """``(N, S, S, 3)`` uint8 pictures (what the model sees, to draw on) and their ``(N, 3, S, S)`` model input,
        each image resized once."""
        pictures = np.stack([self.to_array(image) for image in images])
        return pictures, torch.stack([self.normalize(picture) for picture in pictures])


def image_transform(model, image_size: int | None = None) -> ImageTransform:
    """The :class:`ImageTransform` of ``model``: its image processor's mean and std (:func:`image_statistics`), at
    ``image_size`` or the vision tower's own input size. Refuses a model whose vision tower peft-interp cannot
    read."""
    from ..backbones import resolve_vision_layout

    config = model.config
    vision = getattr(config, "vision_config", config)
    mean, std = image_statistics(model)
    resolve_vision_layout(model)  # fails early with a clear message for unsupported models
    return ImageTransform(image_size or vision.image_size, mean, std)
