"""CoCoOp as a PEFT tuner: a CoOp context shifted per image by a meta-net, all images' prompts encoded together."""

from __future__ import annotations

import torch
from transformers import CLIPModel

from ..clip_prompt.model import ImageBatch
from ..coop.model import CoOpModel
from ..recipe import COOP_RECIPE, TrainingRecipe
from .config import CoCoOpConfig
from .layer import MetaNet

# CoCoOp's base-to-novel run (configs/trainers/CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml of the official code).
COCOOP_RECIPE = COOP_RECIPE.override(
    epochs=10, batch_size=1, source="CoCoOp (Zhou et al. 2022), vit_b16_c4_ep10_batch1_ctxv1"
)


class CoCoOpModel(CoOpModel):
    """Conditional Context Optimisation on a ``CLIPModel``: ``[SOS] v_1 + pi(x) .. v_M + pi(x) <class>. [EOS]``.

    The reference code builds the ``C`` prompts of one image at a time; here the ``B x C`` prompts of a whole batch
    go through the text encoder together (in chunks of ``max_prompts_per_text_call`` rows), which gives the same
    logits. Without the adapter the model is zero-shot CLIP with the config's template.

    Example:

        ```py
        >>> import torch
        >>> from transformers import CLIPConfig, CLIPModel
        >>> from peft import get_peft_model
        >>> from peft_interp import CoCoOpConfig

        >>> clip = CLIPModel(CLIPConfig(
        ...     text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2),
        ...     vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        ...                        image_size=32, patch_size=8), projection_dim=16))
        >>> model = get_peft_model(clip, CoCoOpConfig(class_names=["cat", "dog", "red bird"]))
        >>> out = model(pixel_values=torch.randn(2, 3, 32, 32), labels=torch.tensor([0, 2]))
        >>> out.logits.shape, out.text_embeds.shape  # one prompt set per image
        (torch.Size([2, 3]), torch.Size([2, 3, 16]))
        >>> model.base_model.training_recipe().batch_size, model.base_model.training_recipe().epochs
        (1, 10)

        ```
    """

    prefix = "cocoop_"
    shared_module_names = ("cocoop_meta_net",)

    def _adapter_modules(self, model, config: CoCoOpConfig, adapter_name: str):
        """The core's token embedding and the meta-net as a shared module."""
        if not isinstance(model, CLIPModel):
            return super()._adapter_modules(model, config, adapter_name)  # raises a clear error
        meta_net = MetaNet(model.config.projection_dim, model.config.text_config.hidden_size, config.meta_net_reduction)
        layers, shared = super()._adapter_modules(model, config, adapter_name)
        return layers, {**shared, "cocoop_meta_net": meta_net}

    def meta_net_bias(self, adapter_name: str, image_embeds: torch.Tensor) -> torch.Tensor:
        """``pi(x)`` ``(B, D)`` of normalised image features ``(B, P)``."""
        meta_net = self.cocoop_meta_net[adapter_name]
        return meta_net(image_embeds.to(meta_net.linear1.weight.dtype))

    def _prompt_context(self, adapter_name: str, batch: ImageBatch) -> torch.Tensor:
        """``(B, C, M, D)``: the shared context plus the image's meta-net bias, the same for every class."""
        context = self.context_layer.context[adapter_name]  # (M, D)
        shifted = context[None] + self.meta_net_bias(adapter_name, batch.image_embeds)[:, None]  # (B, M, D)
        return shifted[:, None].expand(-1, len(self.peft_config[adapter_name].class_names), -1, -1)

    def _encode_classes(
        self, adapter_name: str, context: torch.Tensor, max_rows_per_call: int | None = None
    ) -> torch.Tensor:
        """As the core's, the ``B x C`` prompts in chunks of ``max_prompts_per_text_call`` rows."""
        limit = max_rows_per_call or self.peft_config[adapter_name].max_prompts_per_text_call
        return super()._encode_classes(adapter_name, context, limit)

    def training_recipe(self) -> TrainingRecipe:
        """SGD lr 0.002, cosine, 1 warm-up epoch at 1e-5, batch 1, 10 epochs (the paper's base-to-novel run)."""
        return COCOOP_RECIPE.override(learning_rate=self.peft_config[self.active_adapters[0]].learning_rate)
