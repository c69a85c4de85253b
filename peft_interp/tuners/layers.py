"""The wrapped modules shared by every peft-interp tuner.

* :class:`PromptedBlock` wraps one transformer block, VPT-deep style: before the block it appends prompt tokens
  ``(B, T, D)`` made by the active adapter's *prompt source*, after the block it drops them again, so the block's
  output keeps its original length and the next block never sees them. A prompt source is any module mapping the
  block input ``(B, P + L, D)`` to prompts ``(B, T, D)``: a learnt parameter for VPT-deep, a function of the
  block's concepts for IVPT.
* :class:`EmbeddingShift` wraps the patch embedding module and adds a learnt ``(1, P + L, D)`` shift to its output,
  which trains the CLS token, register tokens and position embeddings without touching the base weights.
* :class:`ContextEmbedding` wraps CLIP's text ``token_embedding`` and writes learnt context vectors into the
  prompt positions they own (CoOp-style text prompts).

All keep the base module untouched, so ``disable_adapter`` and ``unload`` give back the original model exactly.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn


class InterpLayer(nn.Module, BaseTunerLayer):
    """Common plumbing of our tuner layers: one base module, per-adapter state in ``adapter_layer_names``."""

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__()
        self.base_layer = base_layer
        self._active_adapter: list[str] = []
        self.merged_adapters: list[str] = []
        self.frozen_peft_weight_names: dict[str, tuple[str, ...]] = {}

    def _register(self, adapter_name: str, inference_mode: bool) -> None:
        self._move_adapter_to_device_of_base_layer(adapter_name)
        self.set_adapter(self.active_adapters or [adapter_name], inference_mode=inference_mode)

    def active_adapter_name(self) -> str | None:
        """The single active adapter, or None when adapters are disabled / none is active."""
        if self.disable_adapters or not self.active_adapters:
            return None
        if len(self.active_adapters) > 1:
            raise ValueError(
                f"Visual prompt tuners run one adapter at a time, but {self.active_adapters} are active: "
                "call `model.set_adapter(name)` with a single name."
            )
        name = self.active_adapters[0]
        return name if name in getattr(self, self.adapter_layer_names[0]) else None

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        raise NotImplementedError(f"{type(self).__name__} adds tokens and cannot be merged into the base weights.")

    def unmerge(self) -> None:
        pass


class PromptedBlock(InterpLayer):
    """A transformer block run with extra prompt tokens appended after its input tokens (VPT-deep).

    Shapes: input ``(B, N, D)`` with ``N = P + L`` (prefix + patch tokens) -> block input ``(B, N + T, D)``
    -> output ``(B, N, D)``.
    """

    adapter_layer_names = ("prompt_sources",)

    def __init__(self, base_layer: nn.Module, adapter_name: str, prompt_source: nn.Module, inference_mode: bool):
        super().__init__(base_layer)
        self.prompt_sources = nn.ModuleDict()
        self.update_layer(adapter_name, prompt_source, inference_mode=inference_mode)

    def update_layer(self, adapter_name: str, prompt_source: nn.Module, inference_mode: bool = False) -> None:
        self.prompt_sources[adapter_name] = prompt_source
        self._register(adapter_name, inference_mode)

    def forward(self, hidden_states: torch.Tensor, attention_mask: Any = None, *args: Any, **kwargs: Any):
        adapter = self.active_adapter_name()
        if adapter is None:
            return self.base_layer(hidden_states, attention_mask, *args, **kwargs)
        if attention_mask is not None:
            raise ValueError("Prompted blocks do not support an attention mask: call the vision model without one.")
        num_tokens = hidden_states.shape[1]
        prompts = self.prompt_sources[adapter](hidden_states)  # (B, T, D)
        output = self.base_layer(torch.cat([hidden_states, prompts.to(hidden_states.dtype)], dim=1), None, *args, **kwargs)
        if isinstance(output, tuple):  # blocks of some transformers versions return (hidden_states, ...)
            return (output[0][:, :num_tokens],) + output[1:]
        return output[:, :num_tokens]

    def __repr__(self) -> str:
        return "prompted." + super().__repr__()


class EmbeddingShift(InterpLayer):
    """Adds a learnt shift ``(1, P + L, D)`` (zero-initialised) to the output of an embeddings module."""

    adapter_layer_names = ("token_shifts",)

    def __init__(self, base_layer: nn.Module, adapter_name: str, num_tokens: int, hidden_size: int, inference_mode: bool):
        super().__init__(base_layer)
        self.token_shifts = nn.ParameterDict()
        self.update_layer(adapter_name, num_tokens, hidden_size, inference_mode=inference_mode)

    def update_layer(self, adapter_name: str, num_tokens: int, hidden_size: int, inference_mode: bool = False) -> None:
        self.token_shifts[adapter_name] = nn.Parameter(torch.zeros(1, num_tokens, hidden_size))
        self._register(adapter_name, inference_mode)

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        embeddings = self.base_layer(*args, **kwargs)  # (B, P + L, D)
        adapter = self.active_adapter_name()
        if adapter is None:
            return embeddings
        shift = self.token_shifts[adapter]
        if shift.shape[1] != embeddings.shape[1]:
            raise ValueError(
                f"The adapter was built for {shift.shape[1]} tokens but the image gives {embeddings.shape[1]}: "
                "feed images of the adapter config's `image_size`."
            )
        return embeddings + shift.to(embeddings.dtype)

    def __repr__(self) -> str:
        return "shifted." + super().__repr__()


class ContextEmbedding(InterpLayer):
    """Wraps CLIP's ``token_embedding``; holds each adapter's learnt context vectors.

    The context is ``(M, D)`` (shared by all classes) or ``(C, M, D)`` (class-specific). The tuner composes the
    context of every prompt row (shared, per class, or per image) and calls the text model inside
    :meth:`inject`, which writes those ``(R, M, D)`` vectors into the ``soft_mask`` positions of the ``(R, T)``
    token embeddings, row by row, in order. Outside :meth:`inject` (or with adapters disabled) the embedding
    behaves exactly like the base one, so ``CLIPModel.get_text_features`` keeps working on plain text.
    """

    adapter_layer_names = ("context",)

    def __init__(self, base_layer: nn.Module, adapter_name: str, context: torch.Tensor, inference_mode: bool):
        super().__init__(base_layer)
        self.context = nn.ParameterDict()
        self._injection: tuple[torch.Tensor, torch.Tensor] | None = None
        self.update_layer(adapter_name, context, inference_mode=inference_mode)

    def update_layer(self, adapter_name: str, context: torch.Tensor, inference_mode: bool = False) -> None:
        self.context[adapter_name] = nn.Parameter(context.clone())
        self._register(adapter_name, inference_mode)

    @contextmanager
    def inject(self, prompt_context: torch.Tensor, soft_mask: torch.Tensor):
        """Within this block, embed ``(R, T)`` ids with ``prompt_context`` ``(R, M, D)`` at ``soft_mask``."""
        self._injection = (prompt_context, soft_mask)
        try:
            yield
        finally:
            self._injection = None

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        embeddings = self.base_layer(input_ids)  # (R, T, D)
        if self._injection is None or self.active_adapter_name() is None:
            return embeddings
        prompt_context, soft_mask = self._injection
        return embeddings.masked_scatter(soft_mask.unsqueeze(-1), prompt_context.to(embeddings.dtype))

    def __repr__(self) -> str:
        return "context." + super().__repr__()
