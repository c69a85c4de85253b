"""Checks of user input made before any work, each failing with a message that names the field, flag or file.

* numbers: :func:`check_number` (finite, in range, of the right type), used by :class:`TrainingArguments`, the
  command line and the method configs (:func:`check_config_values`);
* model inputs: :func:`check_pixel_values` and :func:`check_labels`, run by
  :class:`~peft_interp.registry.PeftModelForInterpretability` before every adapted forward pass;
* class lists: :func:`check_class_names` (duplicates, also ones that differ only in case or spacing, would give
  identical logit columns);
* memory: :func:`estimate_step_bytes` / :func:`check_fits_in_memory`, an estimate of the activations of one step of
  a ViT at a given input size, so a size that cannot fit is refused before the kernel kills the process.
"""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import fields

import torch

IGNORE_INDEX = -100  # torch.nn.functional.cross_entropy's default


# -------------------------------------------------------------------------------------------------- numbers
def check_number(
    name: str,
    value,
    *,
    integer: bool = False,
    minimum: float | None = None,
    exclusive_minimum: bool = False,
    maximum: float | None = None,
    allow_none: bool = False,
):
    """Return ``value`` if it is a finite real number (an int if ``integer``) within the bounds, else raise a
    ``ValueError`` (``TypeError`` for a non-number) naming ``name``."""
    if value is None and allow_none:
        return value
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or (integer and not isinstance(value, numbers.Integral)):
        raise TypeError(f"{name} must be {kind}, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if minimum is not None and (value <= minimum if exclusive_minimum else value < minimum):
        raise ValueError(f"{name} must be {'>' if exclusive_minimum else '>='} {minimum:g}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum:g}, got {value!r}")
    return value


# Method-config fields that must be > 0 (a temperature or learning rate of 0 divides by zero or learns nothing);
# every ``*_weight`` field must be >= 0 (a negative loss weight maximises that loss).
POSITIVE_CONFIG_FIELDS = ("gumbel_tau", "mi_temperature", "mixup_alpha", "learning_rate", "prototype_learning_rate",
                          "prototype_init_std", "visual_prompt_init_std")  # fmt: skip


def check_config_values(config) -> None:
    """Type and range checks of a peft-interp method config's own fields (not PEFT's): a field whose default is a
    bool / int / float must hold one or None (an int where a float is expected is fine), floats must be finite, the
    :data:`POSITIVE_CONFIG_FIELDS` > 0 and ``*_weight`` fields >= 0. Raises naming the field as ```name```."""
    from peft.config import PeftConfig

    inherited = {f.name for f in fields(PeftConfig)}
    for spec in fields(config):
        if spec.name in inherited or spec.default is None or not isinstance(spec.default, (bool, int, float)):
            continue
        value, label = getattr(config, spec.name), f"`{spec.name}`"
        if value is None:  # Optional fields (e.g. presence_group_size); required ones are checked by the config
            continue
        if isinstance(spec.default, bool):
            if not isinstance(value, bool):
                raise TypeError(f"{label} must be true or false, got {value!r}")
            continue
        check_number(label, value, integer=isinstance(spec.default, int))
        if spec.name in POSITIVE_CONFIG_FIELDS:
            check_number(label, value, minimum=0, exclusive_minimum=True)
        if spec.name.endswith("_weight"):
            check_number(label, value, minimum=0)


def check_hf_model(model, config) -> None:
    """peft-interp tuners adapt Hugging Face models: refuse a module without a ``PretrainedConfig`` ``config``."""
    from transformers import PretrainedConfig

    if not isinstance(getattr(model, "config", None), PretrainedConfig):
        raise TypeError(f"{type(config).__name__} adapts a Hugging Face vision model (a PreTrainedModel with a "
                        f"`config`, e.g. Dinov2Model or CLIPModel); got a {type(model).__name__} without one")  # fmt: skip


# ---------------------------------------------------------------------------------------------- class names
def check_class_names(names, field: str = "class_names") -> None:
    """Raise if two class names are the same once case and surrounding spaces are ignored: their prompts (CLIP
    methods) or explanations would be indistinguishable and two logit columns would be identical."""
    seen: dict[str, str] = {}
    for name in names or []:
        key = " ".join(str(name).split()).casefold()
        if key in seen:
            same = "duplicated" if seen[key] == name else f"the same as {seen[key]!r} up to case/spaces"
            raise ValueError(f"{field}: class name {name!r} is {same}; every class needs a distinct name")
        seen[key] = name


# ---------------------------------------------------------------------------------------------- model inputs
def check_pixel_values(pixel_values, channels: int, size: int | tuple[int, int] | None) -> None:
    """``pixel_values`` must be a floating ``(B, channels, H, W)`` tensor of finite, normalised values with
    ``(H, W) == size`` (when given)."""
    if not isinstance(pixel_values, torch.Tensor):
        raise TypeError(f"`pixel_values` must be a torch.Tensor (B, {channels}, H, W), got {type(pixel_values).__name__}")
    if not pixel_values.is_floating_point():
        raise TypeError(
            f"`pixel_values` must be a float tensor of normalised images, got dtype {pixel_values.dtype} (raw "
            "pixels?): convert them with the model's image processor or peft_interp.training.ImageTransform"
        )
    expected = f"(B, C, {size}, {size}) with C={channels}" if isinstance(size, int) else f"(B, C, H, W) with C={channels}"
    if pixel_values.ndim != 4:
        raise ValueError(f"`pixel_values` must have shape {expected}, got {tuple(pixel_values.shape)}")
    if pixel_values.shape[1] != channels:
        raise ValueError(
            f"`pixel_values` has {pixel_values.shape[1]} channels, the model expects {channels}: shape {expected}, "
            f"got {tuple(pixel_values.shape)}"
        )
    if size is not None:
        size = (size, size) if isinstance(size, int) else tuple(size)
        if tuple(pixel_values.shape[-2:]) != size:
            raise ValueError(
                f"`pixel_values` must have shape {expected} (the adapter's input size), got {tuple(pixel_values.shape)}"
            )
    finite = torch.isfinite(pixel_values)
    if not bool(finite.all()):
        bad = (~finite).flatten(1).any(1).nonzero().flatten().tolist()
        raise ValueError(f"`pixel_values` holds NaN or infinite values (images {bad[:10]} of the batch)")


def check_labels(labels, batch_size: int, num_classes: int) -> None:
    """``labels`` must be ``(B,)`` integer class ids in ``[0, num_classes)``, or ``-100`` (ignored), not all
    ignored (the mean loss over no label is NaN)."""
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"`labels` must be a torch.Tensor of class ids, got {type(labels).__name__}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"`labels` must hold integer class ids, got dtype {labels.dtype}")
    if labels.shape != (batch_size,):
        raise ValueError(f"`labels` must have shape ({batch_size},) (one per image), got {tuple(labels.shape)}")
    kept = labels[labels != IGNORE_INDEX]
    if kept.numel() == 0:
        raise ValueError(f"`labels`: every label of the batch is the ignore index {IGNORE_INDEX}: there is no loss")
    outside = kept[(kept < 0) | (kept >= num_classes)]
    if outside.numel():
        raise ValueError(
            f"`labels` must be class ids in [0, {num_classes - 1}] ({num_classes} classes) or {IGNORE_INDEX}, got "
            f"{sorted(set(outside.tolist()))[:10]}"
        )


# ----------------------------------------------------------------------------------------------------- memory
def available_memory_bytes(device: torch.device | str | None = None) -> int | None:
    """Free memory of ``device`` (CUDA: ``mem_get_info``; CPU: ``MemAvailable`` of /proc/meminfo), None if unknown."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def estimate_step_bytes(vision_config, image_size: int, batch_size: int, training: bool = True) -> int:
    """A lower estimate of the float32 activations of one ViT forward (and backward when ``training``) pass:
    per block the attention probabilities ``B x heads x T^2`` and about ``12 x B x T x D`` values (q, k, v,
    projections, the 4D-wide MLP), kept for every block when training, one block at a time otherwise."""
    patch = vision_config.patch_size
    tokens = (image_size // patch) ** 2 + 1
    per_block = batch_size * (vision_config.num_attention_heads * tokens**2 + 12 * tokens * vision_config.hidden_size)
    blocks = vision_config.num_hidden_layers if training else 1
    return 4 * per_block * blocks * (2 if training else 1)


def check_fits_in_memory(vision_config, image_size: int, batch_size: int, flag: str = "--image-size",
                         training: bool = True, device=None) -> None:  # fmt: skip
    """Raise a ``ValueError`` naming ``flag`` if :func:`estimate_step_bytes` exceeds the free memory."""
    needed, free = estimate_step_bytes(vision_config, image_size, batch_size, training), available_memory_bytes(device)
    if free is not None and needed > free:
        raise ValueError(
            f"{flag} {image_size}: one {'training' if training else 'evaluation'} step at batch size {batch_size} "
            f"needs at least {needed / 2**30:.1f} GiB of activations, more than the {free / 2**30:.1f} GiB free: "
            f"use a smaller {flag} or batch size"
        )
