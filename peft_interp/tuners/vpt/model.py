"""VPT-deep as a PEFT tuner: prompt tokens in every block, a linear head on the CLS token."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_outputs import ImageClassifierOutput

from ..explanation import Explanation
from ..visual.model import PartMaps, VisualPromptTuner
from .config import VPTDeepConfig
from .layer import PromptTokens


class VPTDeepModel(VisualPromptTuner):
    """VPT-deep on a DINOv2 or CLIP vision tower, the baseline IVPT is compared with.

    Example:

        ```py
        >>> import torch
        >>> from transformers import Dinov2Config, Dinov2Model
        >>> from peft import get_peft_model
        >>> from peft_interp import VPTDeepConfig

        >>> base = Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        ...                                 intermediate_size=64, image_size=28, patch_size=7))
        >>> model = get_peft_model(base, VPTDeepConfig(num_classes=3))
        >>> model(pixel_values=torch.randn(2, 3, 28, 28), labels=torch.tensor([0, 2])).logits.shape
        torch.Size([2, 3])

        ```
    """

    prefix = "vpt_"
    shared_module_names = ("vpt_head",)

    def _create_adapter_modules(self, config: VPTDeepConfig, adapter_name: str, blocks: list[str]):
        layout = self.layout
        sources = [PromptTokens(config.num_prompt_tokens, layout.hidden_size, layout.patch_size) for _ in blocks]
        head = nn.Linear(layout.hidden_size, config.num_classes)
        nn.init.trunc_normal_(head.weight, std=0.02)
        nn.init.zeros_(head.bias)
        return sources, {"vpt_head": head}

    def _adapted_forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None) -> ImageClassifierOutput:
        head = self.vpt_head[self.active_adapters[0]]
        cls_token = self.encode_image(pixel_values)[:, 0].to(head.weight.dtype)  # (B, D)
        logits = head(cls_token)  # (B, C)
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        return ImageClassifierOutput(loss=loss, logits=logits)

    @torch.no_grad()
    def explain(self, pixel_values: torch.Tensor) -> Explanation:
        """The predictions and, as VPT-deep's only spatial evidence, the prompt-token similarity maps of
        :meth:`part_maps` (``maps`` ``(B, T, h, w)``, named ``"prompt token t"``); VPT-deep has no concepts, so no
        contributions."""
        parts = self.part_maps(pixel_values)
        names = [f"prompt token {t}" for t in range(parts.concept_maps.shape[1])]
        return Explanation(
            logits=parts.logits, predictions=parts.logits.argmax(dim=-1), maps=parts.concept_maps, map_names=names
        )

    @torch.no_grad()
    def part_maps(self, pixel_values: torch.Tensor) -> PartMaps:
        """VPT-deep has no concept maps; as the stand-in the part metrics score, each prompt token of the last
        prompted block gets the map of its cosine similarity to every final patch token (softmax over prompt
        tokens), ``(B, T, h, w)``, used both as prototype and as concept maps."""
        adapter_name = self.active_adapters[0]
        tokens = self.encode_image(pixel_values)  # (B, P + L, D)
        logits = self.vpt_head[adapter_name](tokens[:, 0].to(self.vpt_head[adapter_name].weight.dtype))
        patches = tokens[:, self.layout.num_prefix_tokens :]  # (B, L, D)
        last_block = self.peft_config[adapter_name].resolve_blocks(self.layout)[-1]
        prompts = self.model.get_submodule(last_block).prompt_sources[adapter_name].tokens  # (T, D)
        similarity = F.normalize(patches, dim=-1) @ F.normalize(prompts.to(patches.dtype), dim=-1).T  # (B, L, T)
        grid = self.patch_grid()
        maps = similarity.softmax(dim=-1).transpose(1, 2).reshape(len(tokens), -1, grid, grid)
        return PartMaps(logits, maps, maps)

    def explanation_metadata(self, adapter_name: str | None = None) -> dict:
        config: VPTDeepConfig = self.peft_config[adapter_name or self.active_adapters[0]]
        return {**super().explanation_metadata(adapter_name), "num_classes": config.num_classes}
