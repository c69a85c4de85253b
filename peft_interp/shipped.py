"""The tiny pretrained backbones shipped with the package, loaded offline.

`peft_interp/checkpoints/` holds two small models trained from scratch on ConceptWorld's pretraining split (see
`scripts/pretrain.py` and `examples/pretrain_backbones.py`), in the ordinary Hugging Face format:

    conceptworld-clip/     CLIPModel (64 px, 8 px patches, 128-wide 4-layer towers), CLIP tokenizer files,
                           CLIPImageProcessor config, pretraining.json
    conceptworld-dinov2/   Dinov2WithRegistersModel (64 px, 8 px patches, 128 wide, 4 layers, 4 registers),
                           BitImageProcessor config, pretraining.json

They stand in for the real backbones wherever no network is available (tests, examples, CI), and are good enough
to make results mean something: the CLIP classifies unseen ConceptWorld classes zero-shot from their names, and the
DINOv2's patch tokens tell the bird's parts apart (`benchmarks/conceptworld_baselines.py`). The CLIP is trained
contrastively on images and captions; the DINOv2 by masked image modelling plus supervised part and attribute
losses on the pretraining split (not by self-distillation, see `scripts/pretrain.py`), so that it sees parts
partly by construction.

With network access, the same code runs on the real models; only the loading line changes:

```python
>>> from transformers import CLIPModel, CLIPTokenizer, Dinov2WithRegistersModel
>>> clip = CLIPModel.from_pretrained("openai/clip-vit-base-patch16")  # doctest: +SKIP
>>> tokenizer = CLIPTokenizer.from_pretrained("openai/clip-vit-base-patch16")  # doctest: +SKIP
>>> dinov2 = Dinov2WithRegistersModel.from_pretrained("facebook/dinov2-with-registers-base")  # doctest: +SKIP
```

(`Dinov2Model.from_pretrained("facebook/dinov2-base")` for DINOv2 without registers.) Offline:

```python
>>> from peft_interp.shipped import default_processor, load_default
>>> clip = load_default("clip")
>>> processor = default_processor("clip")  # 64 px, OpenAI CLIP's mean and std
>>> pixel_values = processor(images, return_tensors="pt").pixel_values  # doctest: +SKIP
```

Weights are stored in float16 to keep the package small; `load_default` returns float32 models by default.

A shipped backbone is named `peft-interp/conceptworld-clip` / `peft-interp/conceptworld-dinov2` wherever a name is
recorded (`model.name_or_path`, hence an adapter's `base_model_name_or_path` and its model card): the name means the
same on every machine, and `load_base_model` (used by the command line and `AutoPeftModelForInterpretability`)
resolves it to the package's own folder, offline.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from transformers import (
    BitImageProcessorPil,
    CLIPImageProcessorPil,
    CLIPModel,
    Dinov2WithRegistersModel,
    PreTrainedModel,
)

from .data.tokenizer import OpenAICLIPTokenizer


CHECKPOINTS_DIR = Path(__file__).resolve().parent / "checkpoints"

_DEFAULTS = {
    "clip": ("conceptworld-clip", CLIPModel, CLIPImageProcessorPil),
    "dinov2": ("conceptworld-dinov2", Dinov2WithRegistersModel, BitImageProcessorPil),
}
DEFAULT_BACKBONES = tuple(_DEFAULTS)
NAMESPACE = "peft-interp"  # portable names of the shipped backbones: "peft-interp/conceptworld-clip", ...

__all__ = [
    "CHECKPOINTS_DIR",
    "DEFAULT_BACKBONES",
    "NAMESPACE",
    "checkpoint_path",
    "default_processor",
    "default_tokenizer",
    "load_base_model",
    "load_default",
    "portable_name",
    "pretraining_info",
    "shipped_backbone",
]


def portable_name(name: str) -> str:
    """The name a shipped backbone is recorded under, e.g. "clip" -> "peft-interp/conceptworld-clip"."""
    folder, _, _ = _lookup(name)
    return f"{NAMESPACE}/{folder}"


def shipped_backbone(name_or_path: str | None) -> str | None:
    """"clip" / "dinov2" if ``name_or_path`` names a shipped backbone (its short name, its folder name
    "conceptworld-clip", or its portable name "peft-interp/conceptworld-clip"), else None."""
    for short, (folder, _, _) in _DEFAULTS.items():
        if name_or_path in (short, folder, f"{NAMESPACE}/{folder}"):
            return short
    return None


def _lookup(name: str) -> tuple[str, type[PreTrainedModel], type]:
    short = shipped_backbone(name)
    if short is None:
        raise ValueError(
            f"unknown default backbone {name!r}, expected one of {DEFAULT_BACKBONES} "
            f"(or {[f'{NAMESPACE}/{folder}' for folder, _, _ in _DEFAULTS.values()]})"
        )
    return _DEFAULTS[short]


def checkpoint_path(name: str) -> Path:
    """The folder of the shipped checkpoint `name` ("clip" or "dinov2")."""
    folder, _, _ = _lookup(name)
    return CHECKPOINTS_DIR / folder


def load_default(name: str, dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """Loads a shipped backbone, without network access.

    Args:
        name (`str`): "clip" (a `CLIPModel`) or "dinov2" (a `Dinov2WithRegistersModel`), or their portable names
            "peft-interp/conceptworld-clip" / "peft-interp/conceptworld-dinov2".
        dtype (`torch.dtype`, defaults to `torch.float32`): the dtype of the returned model (weights are stored in
            float16).

    Returns:
        The model, in eval mode, whose `name_or_path` is the portable name (what adapters trained on it record as
        `base_model_name_or_path`).
    """
    _, model_class, _ = _lookup(name)
    model = model_class.from_pretrained(checkpoint_path(name), dtype=dtype, local_files_only=True).eval()
    model.name_or_path = model.config.name_or_path = portable_name(name)
    return model


def load_base_model(name_or_path: str, **kwargs: Any) -> PreTrainedModel:
    """A base model by name: a shipped backbone (see :func:`shipped_backbone`), offline; otherwise
    `transformers.AutoModel.from_pretrained(name_or_path, **kwargs)` (a local folder or a Hub id)."""
    if shipped_backbone(name_or_path) is not None:
        return load_default(name_or_path)
    from transformers import AutoModel

    return AutoModel.from_pretrained(name_or_path, **kwargs)


def default_processor(name: str):
    """The image processor of a shipped backbone: resizes and crops to 64 px and normalises with the mean and std
    the model was trained with (OpenAI CLIP's for "clip", ImageNet's for "dinov2").

    Returns:
        A `CLIPImageProcessorPil` or `BitImageProcessorPil` (the PIL backends, which need no torchvision).
    """
    _, _, processor_class = _lookup(name)
    return processor_class.from_pretrained(checkpoint_path(name), local_files_only=True)


def default_tokenizer() -> OpenAICLIPTokenizer:
    """The CLIP checkpoint's tokenizer, with OpenAI's text cleaning (ids identical to `load_clip_tokenizer()`)."""
    return OpenAICLIPTokenizer.from_pretrained(checkpoint_path("clip"), local_files_only=True)


def pretraining_info(name: str) -> dict[str, Any]:
    """What `pretraining.json` records about how a shipped backbone was trained: seed, ConceptWorld config,
    settings, losses, wall-clock time, library versions."""
    return json.loads((checkpoint_path(name) / "pretraining.json").read_text("utf-8"))
