"""The BaseTuner shared by visual prompt tuners (VPT-deep, IVPT).

A visual prompt tuner wraps some blocks of a ViT in :class:`~peft_interp.tuners.layers.PromptedBlock` (and,
optionally, its embeddings in :class:`~peft_interp.tuners.layers.EmbeddingShift`), keeps the state used after the
backbone (classification head, final concept level) in ``nn.ModuleDict``\\ s keyed by adapter name on the tuner
itself, and defines its own ``forward``. A subclass provides three things:

* ``shared_module_names``: the names of those ModuleDicts ,
* ``_create_adapter_modules(config, adapter_name)``: the prompt sources of its blocks and its shared modules,
* ``_adapted_forward(pixel_values, labels=None)``: the forward pass with the active adapter.

PEFT saves everything under the tuner layers and the tuner's ModuleDicts, so ``save_pretrained`` /
``from_pretrained`` round-trip the whole adapter.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import nn

from ...backbones import VisionLayout, resolve_vision_layout
from ..base import InterpTuner, LayerPlan
from ..layers import EmbeddingShift, PromptedBlock
from ..recipe import IVPT_RECIPE, TrainingRecipe
from .config import VisualPromptConfig


class PartMaps(NamedTuple):
    """What the part metrics score, from one forward pass (see ``peft_interp.evaluation.runner``)."""

    logits: torch.Tensor  # (B, C)
    prototype_maps: torch.Tensor  # (B, P, h, w) maps scored for part consistency and stability
    concept_maps: torch.Tensor  # (B, N, h, w) maps scored for alignment with the part masks


class VisualPromptTuner(InterpTuner):
    layout: VisionLayout

    # ----------------------------------------------------------------------------------------------- subclass API
    def _create_adapter_modules(
        self, config: VisualPromptConfig, adapter_name: str, blocks: list[str]
    ) -> tuple[list[nn.Module], dict[str, nn.Module]]:
        """Return (one prompt source per block in ``blocks``, {shared module name: module})."""
        raise NotImplementedError

    def _adapted_forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None):
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------------- injection
    def _adapter_modules(self, model: nn.Module, config: VisualPromptConfig, adapter_name: str):
        """Prompted blocks (and the embeddings' token shift when ``train_token_embeddings``), plus the subclass's
        shared modules."""
        self.layout = resolve_vision_layout(model)
        grid = config.resolved_image_size(self.layout) // self.layout.patch_size
        blocks = config.resolve_blocks(self.layout)
        sources, shared = self._create_adapter_modules(config, adapter_name, blocks)
        layers = {}
        if config.train_token_embeddings:
            num_tokens = self.layout.num_prefix_tokens + grid * grid
            layers[self.layout.embeddings_path] = LayerPlan(EmbeddingShift, (num_tokens, self.layout.hidden_size))
        layers.update({block: LayerPlan(PromptedBlock, (source,)) for block, source in zip(blocks, sources)})
        return layers, shared

    # --------------------------------------------------------------------------------------------------- forward
    def forward(self, pixel_values: torch.Tensor | None = None, labels: torch.Tensor | None = None, **kwargs: Any):
        """The adapted forward ``(pixel_values, labels=None)``; the base model's own forward when disabled."""
        if self.active_adapter_in_use() is None:
            labels = {} if labels is None else {"labels": labels}  # a backbone without labels refuses them
            return self.model(pixel_values=pixel_values, **labels, **kwargs)
        if kwargs:
            raise TypeError(f"Unexpected arguments {sorted(kwargs)}: pass pixel_values and labels.")
        return self._adapted_forward(pixel_values, labels)

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Run the (prompted) vision tower: ``(B, 3, S, S)`` -> normalised tokens ``(B, P + L, D)``."""
        config = self.peft_config[self.active_adapters[0]]
        size = config.resolved_image_size(self.layout)
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[-2:]) != (size, size):
            raise ValueError(
                f"`pixel_values` must have shape (B, C, {size}, {size}) (the adapter config's `image_size`), "
                f"got {tuple(pixel_values.shape)}."
            )
        vision = self.model.get_submodule(self.layout.vision_path)
        hidden_states = vision(pixel_values=pixel_values).last_hidden_state
        if not self.layout.output_is_normalized:
            hidden_states = self.model.get_submodule(self.layout.final_norm_path)(hidden_states)
        return hidden_states

    def training_recipe(self) -> TrainingRecipe:
        """IVPT's recipe (Adam, StepLR, clipping 2.0): visual prompt baselines are trained the way IVPT is, as in
        IVPT's comparison."""
        return IVPT_RECIPE

    def patch_grid(self) -> int:
        """Side of the square patch grid ``h = w`` of the active adapter's input size."""
        config = self.peft_config[self.active_adapters[0]]
        return config.resolved_image_size(self.layout) // self.layout.patch_size
