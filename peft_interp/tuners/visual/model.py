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
from ..base import InterpTuner, check_base_model
from ..layers import EmbeddingShift, PromptedBlock
from ..recipe import IVPT_RECIPE, TrainingRecipe
from .config import VisualPromptConfig


class PartMaps(NamedTuple):
    """What the part metrics score, from one forward pass (see ``peft_interp.training.evaluation``)."""

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
    def inject_adapter(self, model: nn.Module, adapter_name: str, **kwargs: Any) -> None:
        config: VisualPromptConfig = self.peft_config[adapter_name]
        self.layout = resolve_vision_layout(model)
        check_base_model(config, model)  # also for adapters added after construction
        grid = config.resolved_image_size(self.layout) // self.layout.patch_size
        blocks = config.resolve_blocks(self.layout)
        targets = list(blocks)
        if config.train_token_embeddings:
            targets.insert(0, self.layout.embeddings_path)
        if not targets:
            raise ValueError(f"{type(config).__name__} adapts no module: prompt at least one block.")

        sources, shared = self._create_adapter_modules(config, adapter_name, blocks)
        self._add_shared_modules(adapter_name, shared, device=next(model.parameters()).device)
        self._pending_targets = set(targets)
        self._pending_sources = dict(zip(blocks, sources))
        self._pending_num_tokens = self.layout.num_prefix_tokens + grid * grid
        try:
            super().inject_adapter(model, adapter_name, **kwargs)
        finally:
            del self._pending_targets, self._pending_sources, self._pending_num_tokens

    def _create_and_replace(self, config, adapter_name, target, target_name, parent, current_key) -> None:
        inference_mode = config.inference_mode
        if current_key == self.layout.embeddings_path:
            shape = (self._pending_num_tokens, self.layout.hidden_size)
            if isinstance(target, EmbeddingShift):
                target.update_layer(adapter_name, *shape, inference_mode=inference_mode)
            else:
                new = EmbeddingShift(target, adapter_name, *shape, inference_mode=inference_mode)
                self._replace_module(parent, target_name, new, target)
            return
        source = self._pending_sources[current_key]
        if isinstance(target, PromptedBlock):
            target.update_layer(adapter_name, source, inference_mode=inference_mode)
        else:
            self._replace_module(parent, target_name, PromptedBlock(target, adapter_name, source, inference_mode), target)

    # --------------------------------------------------------------------------------------------------- forward
    def forward(self, *args: Any, **kwargs: Any):
        """The adapted forward ``(pixel_values, labels=None)``; the base model's own forward when disabled."""
        if self.active_adapter_in_use() is None:
            return self.model(*args, **kwargs)
        return self._adapted_forward(*args, **kwargs)

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
