"""IVPT as a PEFT tuner: concept-prototype prompts in the last blocks of a ViT and a per-concept head."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from transformers.utils import ModelOutput

from ..explanation import Explanation
from ..recipe import IVPT_RECIPE, TrainingRecipe
from ..visual.model import PartMaps, VisualPromptTuner
from . import losses
from .config import IVPTConfig
from .layer import HeadOutput, IVPTHead, IVPTPromptLevel, LevelRecord, level_records, recording_levels

# Loss terms in the order they are reported; each is weighted by the config field f"{name}_weight".
LOSS_TERMS = (
    "classification", "consistency", "presence", "background_presence", "total_variation", "pixel_entropy",
    "equivariance", "orthogonality",
)  # fmt: skip


@dataclass
class IVPTOutput(ModelOutput):
    """Output of an IVPT forward.

    Args:
        loss: total loss, when ``labels`` were given.
        logits: ``(B, C)`` class scores (mean of the per-concept scores).
        concept_logits: ``(B, C, N)`` each concept's class scores.
        concept_maps: ``(B, N + 1, h, w)`` final-level concept maps (last channel: background), summing to 1.
        loss_terms: the unweighted loss terms, when ``labels`` were given.
    """

    loss: Optional[torch.Tensor] = None
    logits: Optional[torch.Tensor] = None
    concept_logits: Optional[torch.Tensor] = None
    concept_maps: Optional[torch.Tensor] = None
    loss_terms: Optional[dict[str, torch.Tensor]] = None


@dataclass
class IVPTExplanation(Explanation):
    """Everything IVPT computed for a batch, from one forward pass.

    The :class:`~peft_interp.tuners.explanation.Explanation` fields: ``logits`` ``(B, C)``, ``predictions``
    ``(B,)``, ``maps`` ``(B, N, h, w)`` the final concept maps and ``background`` ``(B, h, w)`` the final
    background map, ``map_names`` the concept names (``config.concept_names``, set by :func:`name_concepts`),
    ``contributions`` ``(B, N)`` each concept's share of the predicted class's logit
    (``concept_logits[b, pred, n] / N``; they sum to ``logits[b, pred]``) and ``class_contributions``
    ``(B, C, N)`` = ``concept_logits / N`` for every class. IVPT's own:

    Args:
        concept_logits: ``(B, C, N)``.
        concept_maps: per prompted layer the grouped maps ``(B, N + 1, h, w)`` that predict the final concepts,
            then the final maps; ``len = number of prompted layers + 1``.
        level_maps: per level the maps of all its prototypes ``(B, K_q, h, w)`` (final level last).
        grouping: per prompted layer the grouping matrix ``(B, K_q - 1, N)`` of fine prototypes into concepts.
        layer_names: the prompted blocks, in the order of ``grouping``, then ``"head"``.
    """

    concept_logits: Optional[torch.Tensor] = None
    concept_maps: Optional[tuple[torch.Tensor, ...]] = None
    level_maps: Optional[tuple[torch.Tensor, ...]] = None
    grouping: Optional[tuple[torch.Tensor, ...]] = None
    layer_names: Optional[tuple[str, ...]] = None


class IVPTModel(VisualPromptTuner):
    """Interpretable Visual Prompt Tuning (ICLR 2026) on ``Dinov2Model``, ``Dinov2WithRegistersModel``,
    ``CLIPVisionModel`` or the vision tower of ``CLIPModel``.

    ``model(pixel_values, labels)`` returns an :class:`IVPTOutput` whose ``loss`` is the paper's full objective
    (including the equivariance pass when training); ``model.explain(pixel_values)`` returns an
    :class:`IVPTExplanation`.

    Example:

        ```py
        >>> import torch
        >>> from transformers import Dinov2Config, Dinov2Model
        >>> from peft import get_peft_model
        >>> from peft_interp import IVPTConfig

        >>> base = Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
        ...                                 intermediate_size=64, image_size=28, patch_size=7))
        >>> model = get_peft_model(base, IVPTConfig(num_classes=5))
        >>> out = model(pixel_values=torch.randn(2, 3, 28, 28), labels=torch.tensor([0, 4]))
        >>> out.logits.shape, out.concept_logits.shape, out.concept_maps.shape
        (torch.Size([2, 5]), torch.Size([2, 5, 4]), torch.Size([2, 5, 4, 4]))
        >>> model.explain(torch.randn(1, 3, 28, 28)).contributions.shape
        torch.Size([1, 4])

        ```
    """

    prefix = "ivpt_"
    shared_module_names = ("ivpt_head",)

    def _create_adapter_modules(self, config: IVPTConfig, adapter_name: str, blocks: list[str]):
        layout = self.layout
        grid = config.resolved_image_size(layout) // layout.patch_size
        final_norm = self.model.get_submodule(layout.final_norm_path)
        levels = [
            IVPTPromptLevel(config, count, layout.hidden_size, grid, layout.num_prefix_tokens, final_norm)
            for count in config.num_prototypes[:-1]
        ]
        return levels, {"ivpt_head": IVPTHead(config, layout.hidden_size, grid)}

    # ------------------------------------------------------------------------------------------------- forward
    def _prompt_levels(self) -> list[tuple[str, IVPTPromptLevel]]:
        adapter = self.active_adapters[0]
        blocks = self.peft_config[adapter].resolve_blocks(self.layout)
        return [(name, self.model.get_submodule(name).prompt_sources[adapter]) for name in blocks]

    def _concepts(self, pixel_values: torch.Tensor) -> tuple[list[LevelRecord], HeadOutput]:
        """One forward: the records of every prompted level (collected for this call only, see
        :func:`~.layer.recording_levels`) and the head's output."""
        head_module = self.ivpt_head[self.active_adapters[0]]
        with recording_levels(dict(self._prompt_levels())) as sinks:
            tokens = self.encode_image(pixel_values).to(head_module.concepts.prototypes.dtype)  # (B, P + L, D)
        head = head_module(tokens[:, self.layout.num_prefix_tokens :])
        return level_records(sinks), head

    def _as_grid(self, maps: torch.Tensor) -> torch.Tensor:
        """``(B, K, L)`` -> ``(B, K, h, w)``."""
        grid = self.patch_grid()
        return maps.unflatten(-1, (grid, grid))

    def _adapted_forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None) -> IVPTOutput:
        records, head = self._concepts(pixel_values)
        loss = terms = None
        if labels is not None:
            loss, terms = self._loss(pixel_values, labels, records, head)
        return IVPTOutput(
            loss=loss,
            logits=head.logits,
            concept_logits=head.concept_logits,
            concept_maps=self._as_grid(head.maps),
            loss_terms=terms,
        )

    # ---------------------------------------------------------------------------------------------------- losses
    def _loss(
        self, pixel_values: torch.Tensor, labels: torch.Tensor, records: list[LevelRecord], head: HeadOutput
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        config: IVPTConfig = self.peft_config[self.active_adapters[0]]
        level_maps = [self._as_grid(r.maps) for r in records] + [self._as_grid(head.maps)]  # (B, K_q, h, w) each

        def level_mean(loss_fn) -> torch.Tensor:
            return torch.stack([loss_fn(maps) for maps in level_maps]).mean()

        terms = {
            "classification": F.cross_entropy(head.logits, labels),
            "consistency": losses.consistency_loss(
                head.maps, [r.grouped_maps for r in records], config.consistency_eps
            ),
            "presence": level_mean(lambda maps: losses.presence_loss(maps, config.presence_group_size)),
            "background_presence": level_mean(losses.background_presence_loss),
            "total_variation": level_mean(losses.total_variation_loss),
            "pixel_entropy": level_mean(losses.pixel_entropy_loss),
            "orthogonality": losses.orthogonality_loss(head.features),
        }
        if self.training and config.equivariance_weight > 0:
            terms["equivariance"] = self._equivariance_loss(pixel_values, level_maps)
        terms = {name: terms[name] for name in LOSS_TERMS if name in terms}
        total = sum(getattr(config, f"{name}_weight") * term for name, term in terms.items())
        return total, terms

    def _equivariance_loss(self, pixel_values: torch.Tensor, level_maps: list[torch.Tensor]) -> torch.Tensor:
        """Second forward on randomly rotated / scaled / shifted images; their maps, mapped back, must match."""
        config: IVPTConfig = self.peft_config[self.active_adapters[0]]
        warp, unwarp = losses.random_affine(
            pixel_values.shape[0],
            pixel_values.shape[-1],
            config.equivariance_rotation,
            config.equivariance_translation,
            config.equivariance_scale,
            device=pixel_values.device,
            per_image=config.equivariance_transform == "per_image",
        )
        records, head = self._concepts(losses.warp_images(pixel_values, warp, mode="bilinear"))
        warped_maps = [self._as_grid(r.maps) for r in records] + [self._as_grid(head.maps)]
        per_level = [
            losses.equivariance_loss(maps, losses.warp_images(warped, unwarp, mode="nearest"))
            for maps, warped in zip(level_maps, warped_maps)
        ]
        return torch.stack(per_level).mean()

    # ------------------------------------------------------------------------------------------ explanations
    @torch.no_grad()
    def explain(self, pixel_values: torch.Tensor) -> IVPTExplanation:
        """Concept maps of every prompted layer and the head, grouping matrices and per-concept contributions to
        the predicted class, all from one forward pass. Call ``model.eval()`` first for deterministic grouping."""
        if self.active_adapter_in_use() is None:
            raise RuntimeError("explain() needs an active, enabled IVPT adapter.")
        records, head = self._concepts(pixel_values)
        predictions = head.logits.argmax(dim=-1)  # (B,)
        num_concepts = head.concept_logits.shape[-1]
        picked = head.concept_logits.gather(1, predictions[:, None, None].expand(-1, 1, num_concepts))[:, 0]
        final_maps = self._as_grid(head.maps)  # (B, N + 1, h, w)
        return IVPTExplanation(
            logits=head.logits,
            predictions=predictions,
            maps=final_maps[:, :-1],
            map_names=self.concept_names(),
            background=final_maps[:, -1],
            contributions=picked / num_concepts,
            class_contributions=head.concept_logits / num_concepts,
            concept_logits=head.concept_logits,
            concept_maps=tuple(self._as_grid(m) for m in [r.grouped_maps for r in records] + [head.maps]),
            level_maps=tuple(self._as_grid(m) for m in [r.maps for r in records] + [head.maps]),
            grouping=tuple(r.grouping for r in records),
            layer_names=tuple(name for name, _ in self._prompt_levels()) + ("head",),
        )

    @torch.no_grad()
    def part_maps(self, pixel_values: torch.Tensor, num_prototypes: int = 11) -> PartMaps:
        """One forward pass -> logits, the foreground prototype maps of the prompted level with ``num_prototypes``
        prototypes (IVPT's part-consistency evaluation scores the 11-prototype level; the finest level if none has
        that many) and the final concept maps (background dropped)."""
        explanation = self.explain(pixel_values)
        levels = [maps for maps in explanation.level_maps[:-1] if maps.shape[1] == num_prototypes]
        prototypes = (levels or explanation.level_maps[:1])[0][:, :-1]
        return PartMaps(explanation.logits, prototypes, explanation.concept_maps[-1][:, :-1])

    def concept_names(self, adapter_name: str | None = None) -> list[str]:
        """The adapter's concept names (``config.concept_names``, see :func:`~peft_interp.naming.name_concepts`),
        else ``"concept 0" ...``."""
        config: IVPTConfig = self.peft_config[adapter_name or self.active_adapters[0]]
        return list(config.concept_names or [f"concept {n}" for n in range(config.num_concepts)])

    def explanation_metadata(self, adapter_name: str | None = None) -> dict:
        config: IVPTConfig = self.peft_config[adapter_name or self.active_adapters[0]]
        concepts = self.concept_names(adapter_name)
        return {
            **super().explanation_metadata(adapter_name),
            "num_classes": config.num_classes,
            "concepts": concepts,
            "prototypes_per_level": config.num_prototypes,
            "prompted_blocks": config.resolve_blocks(self.layout),
        }

    # -------------------------------------------------------------------------------------------------- training
    def training_recipe(self) -> TrainingRecipe:
        return IVPT_RECIPE.override(learning_rate=self.peft_config[self.active_adapters[0]].learning_rate)

    def optimizer_param_groups(self) -> list[dict]:
        """The paper's two learning-rate groups for the active adapter's trainable parameters: prototypes, spatial
        biases and token shifts at ``prototype_learning_rate``; linears and norms at ``learning_rate``."""
        config: IVPTConfig = self.peft_config[self.active_adapters[0]]
        slow_names = ("prototypes", "spatial_bias", "token_shifts")
        slow, fast = [], []
        for name, param in self.named_parameters():
            if param.requires_grad:
                (slow if any(part in name for part in slow_names) else fast).append(param)
        return [
            {"params": fast, "lr": config.learning_rate},
            {"params": slow, "lr": config.prototype_learning_rate},
        ]
