"""The BaseTuner shared by visual prompt tuners (VPT-deep, IVPT).

A visual prompt tuner wraps some blocks of a ViT in :class:`~peft_interp.tuners.layers.PromptedBlock` (and,
optionally, its embeddings in :class:`~peft_interp.tuners.layers.EmbeddingShift`), keeps the state used after the
backbone (classification head, final concept level) in ``nn.ModuleDict``\\ s keyed by adapter name on the tuner
itself, and defines its own ``forward``. A subclass provides three things:

* ``shared_module_names``: the names of those ModuleDicts (they must start with the tuner's ``prefix``),
* ``_create_adapter_modules(config, adapter_name)``: the prompt sources of its blocks and its shared modules,
* ``_adapted_forward(pixel_values, labels=None)``: the forward pass with the active adapter.

PEFT saves everything under the tuner layers and the tuner's ModuleDicts, so ``save_pretrained`` /
``from_pretrained`` round-trip the whole adapter.
"""

from __future__ import annotations

from typing import Any

import torch
from peft.tuners.tuners_utils import BaseTuner, _get_submodules
from torch import nn

from ..backbones import VisionLayout, resolve_vision_layout
from .config import VisualPromptConfig
from .layers import EmbeddingShift, PromptedBlock, VisualPromptLayer


class VisualPromptTuner(BaseTuner):
    uses_shared_state = True
    tuner_layer_cls = VisualPromptLayer
    target_module_mapping: dict[str, list[str]] = {}
    shared_module_names: tuple[str, ...] = ()

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
        grid = config.resolved_image_size(self.layout) // self.layout.patch_size
        blocks = config.resolve_blocks(self.layout)
        targets = list(blocks)
        if config.train_token_embeddings:
            targets.insert(0, self.layout.embeddings_path)
        if not targets:
            raise ValueError(f"{type(config).__name__} adapts no module: prompt at least one block.")

        device = next(model.parameters()).device
        sources, shared = self._create_adapter_modules(config, adapter_name, blocks)
        self._pending_targets = set(targets)
        self._pending_sources = dict(zip(blocks, sources))
        self._pending_num_tokens = self.layout.num_prefix_tokens + grid * grid
        for name, module in shared.items():
            if name not in self._modules:
                self.add_module(name, nn.ModuleDict())
            self._modules[name][adapter_name] = module.to(device)
        try:
            super().inject_adapter(model, adapter_name, **kwargs)
        finally:
            del self._pending_targets, self._pending_sources, self._pending_num_tokens

    def _prepare_adapter_config(self, peft_config, model_config):
        return peft_config  # targets are resolved from the model in inject_adapter

    def _check_target_module_exists(self, peft_config, key: str) -> bool:
        return key in self._pending_targets

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

    # --------------------------------------------------------------------------------------- adapter management
    def _shared_modules(self) -> list[nn.ModuleDict]:
        return [self._modules[name] for name in self.shared_module_names if name in self._modules]

    def set_adapter(self, adapter_name: str | list[str], inference_mode: bool = False) -> None:
        super().set_adapter(adapter_name, inference_mode=inference_mode)
        active = set(self.active_adapters)
        for modules in self._shared_modules():
            for name, module in modules.items():
                module.requires_grad_(name in active and not inference_mode)

    def delete_adapter(self, adapter_name: str) -> None:
        super().delete_adapter(adapter_name)
        for modules in self._shared_modules():
            if adapter_name in modules:
                del modules[adapter_name]

    def _unload_and_optionally_merge(self, merge=True, progressbar=False, safe_merge=False, adapter_names=None):
        if merge:
            raise NotImplementedError("Prompt tokens cannot be merged into the base weights; use `unload()`.")
        for key in [key for key, module in self.model.named_modules() if isinstance(module, VisualPromptLayer)]:
            parent, target, target_name = _get_submodules(self.model, key)
            setattr(parent, target_name, target.get_base_layer())
        for name in self.shared_module_names:
            self._modules.pop(name, None)
        if hasattr(self.model, "peft_config"):
            del self.model.peft_config
        return self.model

    # --------------------------------------------------------------------------------------------------- forward
    def active_adapter_in_use(self) -> str | None:
        """The adapter the next forward runs with, or None when adapters are disabled."""
        for module in self.model.modules():
            if isinstance(module, VisualPromptLayer):
                return module.active_adapter_name()
        return None

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

    def patch_grid(self) -> int:
        """Side of the square patch grid ``h = w`` of the active adapter's input size."""
        config = self.peft_config[self.active_adapters[0]]
        return config.resolved_image_size(self.layout) // self.layout.patch_size
