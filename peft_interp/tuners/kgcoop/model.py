"""KgCoOp as a PEFT tuner: CoOp regularised toward the hand-crafted prompts' class features."""

from __future__ import annotations

import torch

from ..clip_prompt.model import ClipPromptOutput, ImageBatch
from ..coop.model import CoOpModel
from ..recipe import COOP_RECIPE, TrainingRecipe
from .config import KgCoOpConfig

# KgCoOp's base-to-novel run (configs/trainers/KgCoOp/vit_b16_ep100_ctxv1.yaml of the official code).
KGCOOP_RECIPE = COOP_RECIPE.override(epochs=100, batch_size=128, source="KgCoOp (Yao et al. 2023), vit_b16_ep100_ctxv1")


def knowledge_distance(text_features: torch.Tensor, hand_crafted: torch.Tensor, kind: str = "squared_l2") -> torch.Tensor:
    """``L_kg`` between learnt and hand-crafted class features, both ``(C, P)`` and L2-normalised.

    ``"squared_l2"``: ``1/C sum_c ||w_c - w_c^clip||^2`` (the paper); ``"cosine"``: ``1 - 1/C sum_c cos(w_c,
    w_c^clip)`` (the official code).
    """
    if kind == "squared_l2":
        return (text_features - hand_crafted).pow(2).sum(dim=-1).mean()
    return 1 - torch.nn.functional.cosine_similarity(text_features, hand_crafted, dim=-1).mean()


class KgCoOpModel(CoOpModel):
    """Knowledge-guided Context Optimisation on a ``CLIPModel``: CoOp's prompts, loss ``L_ce + lambda * L_kg``.

    The hand-crafted class features come from the frozen text tower and are computed once per class list.

    Example:

        ```py
        >>> import torch
        >>> from transformers import CLIPConfig, CLIPModel
        >>> from peft import get_peft_model
        >>> from peft_interp import KgCoOpConfig

        >>> clip = CLIPModel(CLIPConfig(
        ...     text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2),
        ...     vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        ...                        image_size=32, patch_size=8), projection_dim=16))
        >>> model = get_peft_model(clip, KgCoOpConfig(class_names=["cat", "dog", "red bird"]))
        >>> out = model(pixel_values=torch.randn(2, 3, 32, 32), labels=torch.tensor([0, 2]))
        >>> sorted(out.loss_terms), out.loss_terms["knowledge"].item() < 1e-6  # starts at the hand-crafted prompt
        (['classification', 'knowledge'], True)

        ```
    """

    prefix = "kgcoop_"

    def _extra_losses(
        self, adapter_name: str, output: ClipPromptOutput, batch: ImageBatch
    ) -> dict[str, tuple[float, torch.Tensor]]:
        """``{"knowledge": (lambda, L_kg)}``."""
        config: KgCoOpConfig = self.peft_config[adapter_name]
        hand_crafted = self.zero_shot_text_features(config.class_names, config.template)  # (C, P)
        distance = knowledge_distance(output.text_embeds, hand_crafted.to(output.text_embeds.dtype), config.knowledge_distance)
        return {"knowledge": (config.knowledge_weight, distance)}

    def training_recipe(self) -> TrainingRecipe:
        """SGD lr 0.002, cosine, 1 warm-up epoch at 1e-5, batch 128, 100 epochs (the paper's base-to-novel run)."""
        return KGCOOP_RECIPE.override(learning_rate=self.peft_config[self.active_adapters[0]].learning_rate)
