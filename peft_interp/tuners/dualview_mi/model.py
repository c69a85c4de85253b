"""DualViewMI as a PEFT tuner: CoOp's soft prompt and CLIP's hand-crafted prompt tied by mutual information."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..clip_prompt.model import ClipPromptOutput, ClipPromptTuner, ContextDecoding, ImageBatch
from ..explanation import PromptExplanation
from ..recipe import TrainingRecipe
from .config import DualViewMIConfig
from .layer import (
    BilinearCritic,
    MLPCritic,
    feature_mixup_loss,
    infonce_from_scores,
    mi_lower_bound,
    mixup_weights,
    prompt_mixup_loss,
    visual_mixup,
)


@dataclass
class ViewAgreement:
    """How far the learnt (soft) view of every class moved from its hand-crafted view: a summary of the adapter,
    the same for every image (what :meth:`DualViewMIModel.explain_views` returns). It is not an
    :class:`~peft_interp.tuners.explanation.Explanation`: ``explain(pixel_values)`` returns one, whose
    ``prompt.notes`` carry the mean view similarity and the MI bound.

    Args:
        class_names: the ``C`` classes.
        view_similarity: ``(C,)`` cosine between each class's soft and hand-crafted text features.
        mi_lower_bound: ``log C - L_mi``, the InfoNCE bound on the views' mutual information (nats).
        context: nearest readable words of the context vectors.
    """

    class_names: list[str]
    view_similarity: torch.Tensor
    mi_lower_bound: float
    context: ContextDecoding


class DualViewMIModel(ClipPromptTuner):
    """Dual-view mutual-information prompt tuning on a ``CLIPModel``.

    Example:

        ```py
        >>> import torch
        >>> from transformers import CLIPConfig, CLIPModel
        >>> from peft import get_peft_model
        >>> from peft_interp import DualViewMIConfig

        >>> clip = CLIPModel(CLIPConfig(
        ...     text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2),
        ...     vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        ...                        image_size=32, patch_size=8), projection_dim=16))
        >>> model = get_peft_model(clip, DualViewMIConfig(class_names=["cat", "dog", "owl"]))
        >>> out = model(pixel_values=torch.randn(4, 3, 32, 32), labels=torch.tensor([0, 1, 2, 0]))
        >>> sorted(out.loss_terms)
        ['augmentation', 'classification', 'mutual_information']
        >>> model.explain_views().view_similarity.shape
        torch.Size([3])

        ```
    """

    prefix = "dualview_"
    shared_module_names = ("dualview_critic",)

    def _adapter_modules(self, model, config: DualViewMIConfig, adapter_name: str):
        """The prompt core's modules and, for a learnt estimator, its critic as a shared module (created after the
        base-model check, like every module of an adapter)."""
        layers, shared = super()._adapter_modules(model, config, adapter_name)
        width = model.config.projection_dim
        if config.mi_estimator == "bilinear_critic":
            shared = {**shared, "dualview_critic": BilinearCritic(width)}
        elif config.mi_estimator == "mlp_critic":
            shared = {**shared, "dualview_critic": MLPCritic(width, config.critic_hidden_size, config.mi_temperature)}
        return layers, shared

    def hand_crafted_features(self, adapter_name: str) -> torch.Tensor:
        """``(C, P)`` hand-crafted view: the normalised mean over the config's templates (computed once)."""
        config: DualViewMIConfig = self.peft_config[adapter_name]
        views = [self.zero_shot_text_features(config.class_names, t) for t in config.hand_crafted_templates]
        return F.normalize(torch.stack(views).mean(dim=0), dim=-1)

    def critic_scores(self, adapter_name: str, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``T(a_i, b_j)`` ``(n, m)`` of the configured estimator for normalised ``a`` ``(n, P)``, ``b`` ``(m, P)``."""
        config: DualViewMIConfig = self.peft_config[adapter_name]
        critics = self._modules.get("dualview_critic")
        critic = critics[adapter_name] if critics is not None and adapter_name in critics else None
        if isinstance(critic, MLPCritic):
            return critic(a, b)
        if isinstance(critic, BilinearCritic):
            return a @ critic.weight @ b.T / config.mi_temperature
        return a @ b.T / config.mi_temperature

    def _extra_losses(
        self, adapter_name: str, output: ClipPromptOutput, batch: ImageBatch
    ) -> dict[str, tuple[float, torch.Tensor]]:
        """``{"mutual_information": (mi_weight, L_mi), "augmentation": (augmentation_weight, L_aug)}`` (the latter
        unless ``augmentation="none"``)."""
        terms = super()._extra_losses(adapter_name, output, batch)
        config: DualViewMIConfig = self.peft_config[adapter_name]
        hand = self.hand_crafted_features(adapter_name)  # (C, P)
        terms["mutual_information"] = (config.mi_weight, self._mi_loss(adapter_name, output.text_embeds, hand))
        if config.augmentation != "none":
            augmentation = self._augmentation_loss(adapter_name, output, hand, batch.labels)
            terms["augmentation"] = (config.augmentation_weight, augmentation)
        return terms

    def _mi_loss(self, adapter_name: str, soft: torch.Tensor, hand: torch.Tensor) -> torch.Tensor:
        """Symmetric InfoNCE of the soft and hand-crafted views over the classes, with the estimator's critic."""
        return infonce_from_scores(self.critic_scores(adapter_name, soft, hand))

    def _augmentation_loss(self, adapter_name: str, output: ClipPromptOutput, hand, labels) -> torch.Tensor:
        config: DualViewMIConfig = self.peft_config[adapter_name]
        lam = mixup_weights(len(labels), config.mixup_alpha, labels.device)
        if config.augmentation == "visual_mixup":  # the critic matches mixed image features to their class's prompt
            mixed = visual_mixup(output.image_embeds, labels, lam)
            return F.cross_entropy(self.critic_scores(adapter_name, mixed, output.text_embeds), labels)
        if config.augmentation == "prompt_mixup":
            return prompt_mixup_loss(output.text_embeds, hand, output.image_embeds, labels, lam, config.mi_temperature)
        scale = self.model.logit_scale.exp()
        return feature_mixup_loss(output.text_embeds, output.image_embeds, labels, lam, scale)

    def _inference_logits(self, adapter_name: str, output: ClipPromptOutput, batch: ImageBatch) -> torch.Tensor:
        """Eval-mode logits by ``config.inference``: the soft view's, fused late with the hand-crafted view's, or of
        the average of the two views."""
        config: DualViewMIConfig = self.peft_config[adapter_name]
        soft, hand = output.text_embeds, self.hand_crafted_features(adapter_name)  # (C, P) each
        scale = self.model.logit_scale.exp()
        if config.inference == "late_fusion":
            hand_logits = scale * output.image_embeds @ hand.T
            return config.fusion_weight * output.logits + (1 - config.fusion_weight) * hand_logits
        if config.inference == "average":
            return scale * output.image_embeds @ F.normalize(soft + hand, dim=-1).T
        return output.logits

    def training_recipe(self) -> TrainingRecipe:
        """KgCoOp's protocol (the closest relative): the CoOp recipe with batch 128 for 100 epochs."""
        return super().training_recipe().override(batch_size=128, epochs=100, source="KgCoOp protocol")

    # ------------------------------------------------------------------------------------------ interpretation
    @torch.no_grad()
    def explain_views(self, adapter_name: str | None = None) -> ViewAgreement:
        """Per class, the cosine between the soft and the hand-crafted view; the MI bound; the context's words."""
        adapter_name = adapter_name or self.active_adapters[0]
        config: DualViewMIConfig = self.peft_config[adapter_name]
        soft = self._encode_classes(adapter_name, self._prompt_context(adapter_name, None))
        hand = self.hand_crafted_features(adapter_name)
        return ViewAgreement(
            class_names=list(config.class_names),
            view_similarity=(soft * hand).sum(dim=-1),
            mi_lower_bound=float(mi_lower_bound(self._mi_loss(adapter_name, soft, hand), len(soft))),
            context=self.decode_context(adapter_name, candidate_ids=self.word_vocabulary(adapter_name)),
        )

    def prompt_explanation(self, adapter_name: str | None = None) -> PromptExplanation:
        """The soft view read as words, how close it stays to the hand-crafted view, and the MI bound."""
        views = self.explain_views(adapter_name)
        notes = [
            f"mean view similarity (soft vs hand-crafted, cosine): {views.view_similarity.mean().item():.3f}",
            f"MI lower bound between the views: {views.mi_lower_bound:.3f} nats",
        ]
        explanation = super().prompt_explanation(adapter_name)
        return dataclasses.replace(explanation, notes=[*explanation.notes, *notes])

    def explanation_metadata(self, adapter_name: str | None = None) -> dict:
        views = self.explain_views(adapter_name)
        config = self.peft_config[adapter_name or self.active_adapters[0]]
        return {
            **super().explanation_metadata(adapter_name),
            "templates": config.hand_crafted_templates,
            "view_similarity": dict(zip(views.class_names, views.view_similarity.tolist())),
            "mi_lower_bound": views.mi_lower_bound,
            "readable_prompt": views.context.prompt,
            "context_tokens": views.context.tokens,
            "context_distances": views.context.distances.tolist(),
        }
