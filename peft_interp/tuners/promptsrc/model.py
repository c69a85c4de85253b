"""PromptSRC as a PEFT tuner: deep vision-language prompts regularised toward the frozen CLIP, aggregated over
epochs with Gaussian weights."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from transformers import CLIPModel

from ..clip_prompt.model import ClipPromptOutput, ImageBatch
from ..clip_prompt.prompts import fill_template
from ..maple.model import MAPLE_RECIPE, DeepPromptTuner
from ..recipe import TrainingRecipe
from .config import IMAGENET_TEMPLATES, PromptSRCConfig
from .layer import GaussianPromptAggregation, IndependentPrompts, gaussian_weights, self_regularization_terms

# PromptSRC's base-to-novel run (configs/trainers/PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx.yaml of the official code).
PROMPTSRC_RECIPE = MAPLE_RECIPE.override(
    learning_rate=0.0025, epochs=20, batch_size=4, source="PromptSRC (Khattak et al. 2023), vit_b16_c2_ep20_batch4_4+4ctx"
)


class PromptSRCModel(DeepPromptTuner):
    """Self-regulating prompts on a ``CLIPModel``: independent deep prompts in both towers, loss
    ``L_ce + lambda_1 L_SCL-image + lambda_2 L_SCL-text + L_SCL-logits``, Gaussian prompt aggregation.

    Learnt: the text context ``(n_t, D)`` (token-embedding wrapper), deep text prompts ``(J_t - 1, n_t, D)`` and
    vision prompts ``(J_v, n_v, W)`` (shared module dict ``promptsrc_prompts``). GPA runs in
    :meth:`on_epoch_end`, which :class:`~peft_interp.training.InterpTrainer` calls after every epoch; a custom loop
    calls it itself (``model.base_model.on_epoch_end(epoch, num_epochs)``, ``epoch`` 1-based).

    Example:

        ```py
        >>> import torch
        >>> from transformers import CLIPConfig, CLIPModel
        >>> from peft import get_peft_model
        >>> from peft_interp import PromptSRCConfig

        >>> clip = CLIPModel(CLIPConfig(
        ...     text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2),
        ...     vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        ...                        image_size=32, patch_size=8), projection_dim=16))
        >>> config = PromptSRCConfig(class_names=["cat", "dog", "red bird"], text_prompt_depth=2, vision_prompt_depth=2)
        >>> model = get_peft_model(clip, config).train()
        >>> out = model(pixel_values=torch.randn(2, 3, 32, 32), labels=torch.tensor([0, 2]))
        >>> sorted(out.loss_terms)
        ['classification', 'image', 'logits', 'text']
        >>> for epoch in (1, 2):  # after each epoch of a 2-epoch run; after the last, the prompts are the GPA sum
        ...     model.base_model.on_epoch_end(epoch, num_epochs=2)

        ```
    """

    prefix = "promptsrc_"
    shared_module_names = ("promptsrc_prompts", "promptsrc_gpa")

    def _adapter_modules(self, model, config: PromptSRCConfig, adapter_name: str):
        """The core's token embedding and the deep text and vision prompts as a shared module."""
        if not isinstance(model, CLIPModel):
            return super()._adapter_modules(model, config, adapter_name)  # raises a clear error
        names = ("text_prompt_depth", "vision_prompt_depth")
        self.check_depth(model, config.text_prompt_depth, config.vision_prompt_depth, names)
        prompts = IndependentPrompts(
            self._num_deep_text_tokens(config), model.config.text_config.hidden_size, config.text_prompt_depth,
            config.num_vision_tokens, model.config.vision_config.hidden_size, config.vision_prompt_depth,
        )  # fmt: skip
        layers, shared = super()._adapter_modules(model, config, adapter_name)
        return layers, {**shared, "promptsrc_prompts": prompts}

    def inject_adapter(self, model, adapter_name: str, **kwargs: Any) -> None:
        super().inject_adapter(model, adapter_name, **kwargs)
        # the running GPA sum covers whatever prompt tensors the adapter has (sized once the context exists)
        num_values = sum(tensor.numel() for tensor in self._prompt_tensors(adapter_name))
        gpa = GaussianPromptAggregation(num_values)
        self._add_shared_modules(adapter_name, {"promptsrc_gpa": gpa}, self.context_layer.weight.device)

    def deep_text_prompts(self, adapter_name: str) -> torch.Tensor:
        """``(J_t - 1, n_t, D)``."""
        return self.promptsrc_prompts[adapter_name].deep_text

    def vision_prompts(self, adapter_name: str) -> torch.Tensor:
        """``(J_v, n_v, W)``."""
        return self.promptsrc_prompts[adapter_name].vision

    # --------------------------------------------------------------------------------------- self-regulation
    def frozen_text_features(self, adapter_name: str) -> torch.Tensor:
        """``(C, P)`` the frozen text tower's class features averaged over ``teacher_templates`` (mean of the
        unnormalised features, then normalised, as in the official code); computed once per class list."""
        config: PromptSRCConfig = self.peft_config[adapter_name]
        templates = tuple(config.teacher_templates or IMAGENET_TEMPLATES)
        names = config.class_names

        def compute() -> torch.Tensor:
            total = 0
            for template in templates:  # one call of C prompts per template
                prompts = self._build(adapter_name, [[fill_template(template, name)] for name in names])
                with torch.no_grad():
                    total = total + self.model.get_text_features(input_ids=prompts.input_ids).pooler_output
            return F.normalize(total / len(templates), dim=-1)

        return self._cached(("teacher", tuple(names), templates), compute)

    def _extra_losses(
        self, adapter_name: str, output: ClipPromptOutput, batch: ImageBatch
    ) -> dict[str, tuple[float, torch.Tensor]]:
        """In training mode, ``L_SCL``: ``{"image": (lambda_1, L1), "text": (lambda_2, L1), "logits": (w, KL)}``
        against the frozen CLIP's features of ``batch.pixel_values`` and of the teacher templates."""
        terms = super()._extra_losses(adapter_name, output, batch)
        if not self.training:
            return terms
        config: PromptSRCConfig = self.peft_config[adapter_name]
        frozen_image = self.frozen_image_features(batch.pixel_values)  # (B, P)
        frozen_text = self.frozen_text_features(adapter_name)  # (C, P)
        frozen_logits = self.model.logit_scale.exp() * frozen_image @ frozen_text.T
        regularization = self_regularization_terms(
            output.image_embeds, frozen_image, output.text_embeds, frozen_text, output.logits, frozen_logits
        )
        weights = {"image": config.image_loss_weight, "text": config.text_loss_weight, "logits": config.logits_loss_weight}
        terms.update({name: (weights[name], value) for name, value in regularization.items()})
        return terms

    # ------------------------------------------------------------------------------ Gaussian prompt aggregation
    def _prompt_tensors(self, adapter_name: str) -> list[torch.Tensor]:
        """The aggregated tensors, in a fixed order: text context, deep text prompts, vision prompts."""
        prompts = self.promptsrc_prompts[adapter_name]
        return [self.context_layer.context[adapter_name], prompts.deep_text, prompts.vision]

    @torch.no_grad()
    def on_epoch_end(self, epoch: int, num_epochs: int) -> None:
        """GPA: add ``w_epoch`` times the current prompts to the running sum; after the last epoch, write the sum
        into the prompts (``epoch`` is 1-based)."""
        adapter_name = self.active_adapters[0]
        config: PromptSRCConfig = self.peft_config[adapter_name]
        if not 1 <= epoch <= num_epochs:
            raise ValueError(f"on_epoch_end: epoch must be in 1..{num_epochs}, got {epoch}.")
        gpa = self.promptsrc_gpa[adapter_name]
        tensors = self._prompt_tensors(adapter_name)
        weight = float(gaussian_weights(num_epochs, config.gpa_mean, config.gpa_std)[epoch - 1])
        gpa.running_sum += weight * torch.cat([tensor.detach().flatten().float() for tensor in tensors])
        gpa.epochs += 1
        if epoch == num_epochs:
            for tensor, values in zip(tensors, gpa.running_sum.split([t.numel() for t in tensors])):
                tensor.copy_(values.view_as(tensor))

    def training_recipe(self) -> TrainingRecipe:
        """SGD lr 0.0025, cosine, 1 warm-up epoch at 1e-5, batch 4, 20 epochs (the paper's base-to-novel run)."""
        return PROMPTSRC_RECIPE.override(learning_rate=self.peft_config[self.active_adapters[0]].learning_rate)
