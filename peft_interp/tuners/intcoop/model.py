"""IntCoOp as a PEFT tuner: image-conditioned context plus a predicted attribute word in CLIP's prompts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint
from transformers import CLIPModel

from ..base import LayerPlan
from ..clip_prompt.model import ClipPromptOutput, ClipPromptTuner, ImageBatch
from ..clip_prompt.prompts import PromptBatch, Segment
from ..clip_prompt.vocabulary import token_words
from ..explanation import Explanation
from ..layers import PromptedBlock
from ..recipe import TrainingRecipe
from .config import IntCoOpConfig
from .layer import AttributeExtractor, ContextConditioner, VisualPrompt

VISION_BLOCK = "vision_model.encoder.layers.{}"


@dataclass
class IntCoOpExplanation(Explanation):
    """What IntCoOp read from each image (besides the :class:`~peft_interp.tuners.explanation.Explanation` fields;
    ``image_notes`` lists the attribute words).

    Args:
        attribute_words: per image, the ``k`` readable vocabulary words nearest to the predicted attribute
            embedding ``A(x)`` (cosine in CLIP's token-embedding space), best first.
        attribute_token_ids: ``(B, k)`` their token ids.
        attribute_scores: ``(B, k)`` their cosine similarity to ``A(x)``.
        attention: ``(B, M, N)`` attention of each context vector over the ``N`` image tokens (mean over heads;
            token 0 is CLS, then the patches in row-major order; ``N = 1`` with ``attention_keys="pooled"``).
    """

    attribute_words: Optional[list[list[str]]] = None
    attribute_token_ids: Optional[torch.Tensor] = None
    attribute_scores: Optional[torch.Tensor] = None
    attention: Optional[torch.Tensor] = None


@dataclass
class IntCoOpBatch(ImageBatch):
    """IntCoOp's view of the images of one forward pass, built by ``forward`` and read by the prompt hooks.

    Args:
        image_embeds, labels, pixel_values: see :class:`~peft_interp.tuners.clip_prompt.ImageBatch`.
        image_context: ``(B, M, D)`` the active adapter's context conditioned on each image, ``v_i(x)``.
        attribute_embeds: ``(B, D)`` the active adapter's predicted attribute embedding ``A(x)``.
        attributes: per image its attribute word (``None`` where it has none), or ``None`` when none were given.
    """

    image_context: Optional[torch.Tensor] = None
    attribute_embeds: Optional[torch.Tensor] = None
    attributes: Optional[list[Optional[str]]] = None


class IntCoOpModel(ClipPromptTuner):
    """IntCoOp on a ``CLIPModel``: prompts ``[SOS] v_1(x) .. v_M(x) A(x) <class>. [EOS]`` per image.

    ``forward(pixel_values, labels=None, attributes=None)``: ``attributes`` is one attribute word per image (or
    ``None`` where the image has none), as produced by :func:`~peft_interp.tuners.intcoop.add_attribute_column`;
    it is only needed for the training losses ``L_attr`` and ``L_reg`` (test images need none). The ``B x C``
    prompts of a batch are encoded in chunks of ``max_prompts_per_text_call`` rows. ``explain(pixel_values)``
    returns the predicted attribute words and the context's attention over the image.

    Example:

        ```py
        >>> import torch
        >>> from transformers import CLIPConfig, CLIPModel
        >>> from peft import get_peft_model
        >>> from peft_interp import IntCoOpConfig

        >>> clip = CLIPModel(CLIPConfig(
        ...     text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2),
        ...     vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        ...                        image_size=32, patch_size=8), projection_dim=16))
        >>> config = IntCoOpConfig(class_names=["cat", "dog", "tree frog"], visual_prompt_depth=2)  # 2 blocks here
        >>> model = get_peft_model(clip, config)
        >>> out = model(pixel_values=torch.randn(2, 3, 32, 32), labels=torch.tensor([0, 2]),
        ...             attributes=["fluffy", None])
        >>> out.logits.shape, out.text_embeds.shape, sorted(out.loss_terms)
        (torch.Size([2, 3]), torch.Size([2, 3, 16]), ['attribute', 'classification', 'regularization'])
        >>> explanation = model.explain(torch.randn(2, 3, 32, 32))
        >>> len(explanation.attribute_words[0]), explanation.attention.shape  # 5 words; 4 context x 17 tokens
        (5, torch.Size([2, 4, 17]))

        ```
    """

    prefix = "intcoop_"
    shared_module_names = ("intcoop_conditioner", "intcoop_attribute")

    def _adapter_modules(self, model, config: IntCoOpConfig, adapter_name: str):
        """The core's token embedding, deep prompts in the first ``visual_prompt_depth`` vision blocks, and the
        conditioner and attribute extractor as shared modules."""
        if not isinstance(model, CLIPModel):
            return super()._adapter_modules(model, config, adapter_name)  # raises a clear error
        num_blocks = model.config.vision_config.num_hidden_layers
        if config.visual_prompt_depth > num_blocks:
            raise ValueError(
                f"`visual_prompt_depth`={config.visual_prompt_depth} exceeds the {num_blocks} vision blocks: "
                f"set it to at most {num_blocks} (0 for no visual prompts)."
            )
        text_width = model.config.text_config.hidden_size
        image_width = model.config.projection_dim
        conditioner = ContextConditioner(
            text_width, image_width, config.num_attention_heads, residual=config.conditioning == "residual"
        )
        if config.conditioning == "residual":  # start from the plain (CoOp) context: v_i(x) = v_i
            torch.nn.init.zeros_(conditioner.attention.out_proj.weight)
        hidden = None if config.attribute_extractor == "linear" else config.attribute_hidden_size or text_width
        shared = {
            "intcoop_conditioner": conditioner,
            "intcoop_attribute": AttributeExtractor(image_width, text_width, hidden),
        }
        layers, core_shared = super()._adapter_modules(model, config, adapter_name)
        width = model.config.vision_config.hidden_size
        for block in range(config.visual_prompt_depth):
            prompt = VisualPrompt(config.visual_prompt_length, width, config.visual_prompt_init_std)
            layers[VISION_BLOCK.format(block)] = LayerPlan(PromptedBlock, (prompt,))
        return layers, {**core_shared, **shared}

    # ------------------------------------------------------------------------------------------- prompt hooks
    def _prompt_layout(self, config: IntCoOpConfig, class_name: str) -> list[Segment]:
        """``[SOS] ctx x M, attr, <class>. [EOS]``: M + 1 soft positions."""
        return [config.num_context_tokens, 1, f"{class_name}."]

    def _prompt_context(self, adapter_name: str, batch: IntCoOpBatch) -> torch.Tensor:
        """``(B, C, M + 1, D)``: the image-conditioned context then the attribute slot, the same for every class."""
        config: IntCoOpConfig = self.peft_config[adapter_name]
        predicted = batch.attribute_embeds  # (B, D)
        slot = predicted if config.classification_trains_attribute else predicted.detach()
        if self.training and config.attribute_slot_in_training == "label" and batch.attributes is not None:
            targets, has_label = self.attribute_targets(batch.attributes, adapter_name)
            slot = torch.where(has_label[:, None], targets.to(slot.dtype), slot)
        prefix = torch.cat([batch.image_context, slot[:, None]], dim=1)  # (B, M + 1, D)
        return prefix[:, None].expand(-1, len(config.class_names), -1, -1)

    def encode_text(self, prompts: PromptBatch, context: torch.Tensor | None = None) -> torch.Tensor:
        """As the core's, with activation checkpointing of each chunk when training (``checkpoint_text_chunks``)."""
        config: IntCoOpConfig = self.peft_config[self.active_adapters[0]]
        if context is None or not (config.checkpoint_text_chunks and torch.is_grad_enabled() and context.requires_grad):
            return super().encode_text(prompts, context)
        return checkpoint(super().encode_text, prompts, context, use_reentrant=False)

    def _encode_classes(
        self, adapter_name: str, context: torch.Tensor, max_rows_per_call: int | None = None
    ) -> torch.Tensor:
        """As the core's, the ``B x C`` prompts in chunks of ``max_prompts_per_text_call`` rows."""
        limit = max_rows_per_call or self.peft_config[adapter_name].max_prompts_per_text_call
        return super()._encode_classes(adapter_name, context, limit)

    def _extra_losses(
        self, adapter_name: str, output: ClipPromptOutput, batch: IntCoOpBatch
    ) -> dict[str, tuple[float, torch.Tensor]]:
        """``L_attr`` (images with an attribute label) and ``L_reg`` (all images and classes)."""
        config: IntCoOpConfig = self.peft_config[adapter_name]
        terms = {}
        if batch.attributes is not None:
            targets, has_label = self.attribute_targets(batch.attributes, adapter_name)
            if has_label.any():
                predicted = batch.attribute_embeds[has_label]
                targets = targets[has_label].to(predicted.dtype)
                loss = attribute_distance(predicted, targets, config.attribute_loss)
                terms["attribute"] = (config.attribute_loss_weight, loss)
        if config.regularization_weight > 0:
            reference = self.reference_text_features(batch.attributes, adapter_name, len(output.logits))  # (B, C, P)
            text = output.text_embeds  # (B, C, P)
            if config.regularization_distance == "squared_l2":
                distance = (text - reference).pow(2).sum(dim=-1)
            else:
                distance = 1 - (text * reference).sum(dim=-1)
            terms["regularization"] = (config.regularization_weight, distance.mean())
        return terms

    # ------------------------------------------------------------------------------------------------ forward
    def image_features(
        self, pixel_values: torch.Tensor, adapter_name: str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys ``(B, N, P)`` for the attention (projected tokens after ``post_layernorm``, or the pooled feature as
        one token) and the projected pooled feature ``(B, P)``. Autograd only runs through the image tower when it
        has active visual prompts (and grad is enabled)."""
        config: IntCoOpConfig = self.peft_config[adapter_name or self.active_adapters[0]]
        clip = self.model
        prompted = config.visual_prompt_depth > 0 and self.active_adapter_in_use() is not None
        with torch.set_grad_enabled(prompted and torch.is_grad_enabled()):
            vision = clip.vision_model(pixel_values=pixel_values)
            pooled = clip.visual_projection(vision.pooler_output)  # (B, P), as get_image_features
            if config.attention_keys == "pooled":
                return pooled[:, None], pooled
            tokens = clip.visual_projection(clip.vision_model.post_layernorm(vision.last_hidden_state))  # (B, N, P)
        return tokens, pooled

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        attributes: list[Optional[str]] | None = None,
        **kwargs: Any,
    ) -> ClipPromptOutput:
        """Classify images over the configured class names.

        Args:
            pixel_values: ``(B, 3, S, S)``.
            labels: ``(B,)`` class indices; adds the loss.
            attributes: ``B`` attribute words (``None`` or ``""`` where an image has none), for ``L_attr`` and the
                attribute prompts of ``L_reg``; optional.
        """
        if kwargs:
            raise TypeError(f"Unexpected arguments {sorted(kwargs)}: pass pixel_values, labels or attributes.")
        if pixel_values is None:
            raise ValueError("Give `pixel_values` (B, 3, H, W): IntCoOp attends over the image tokens.")
        if attributes is not None and len(attributes) != len(pixel_values):
            raise ValueError(f"`attributes` has {len(attributes)} entries for {len(pixel_values)} images.")
        tokens, pooled = self.image_features(pixel_values)
        batch = IntCoOpBatch(F.normalize(pooled, dim=-1), labels, pixel_values, attributes=_clean(attributes))
        adapter_name = self.active_adapter_in_use()
        if adapter_name is not None:  # what the prompt hooks read: v_i(x) and A(x)
            context = self.context_layer.context[adapter_name]  # (M, D)
            batch.image_context, _ = self.intcoop_conditioner[adapter_name](context, tokens)  # (B, M, D)
            batch.attribute_embeds = self.intcoop_attribute[adapter_name](pooled)  # (B, D)
        return self._classify(batch)

    def training_recipe(self) -> TrainingRecipe:
        """MaPLe-like SGD (our guess; IntCoOp's own numbers are unverified): batch 4, 5 epochs."""
        return super().training_recipe().override(batch_size=4, epochs=5, source="MaPLe-like (unverified for IntCoOp)")

    # ------------------------------------------------------------------------------------------------ targets
    def attribute_embedding(self, word: str, adapter_name: str | None = None) -> torch.Tensor:
        """``(D,)`` frozen token embedding of an attribute word (mean over its BPE tokens)."""
        adapter_name = adapter_name or self.active_adapters[0]
        ids = self.tokenizer(adapter_name).encode(word, add_special_tokens=False)
        table = self.context_layer.weight
        return self._cached(("attribute", adapter_name, word), lambda: table[ids].detach().float().mean(dim=0))

    def attribute_targets(self, attributes: list[Optional[str]], adapter_name: str | None = None):
        """``(B, D)`` label embeddings (zeros where missing) and ``(B,)`` bool mask of images with a label."""
        device = self.context_layer.weight.device
        has_label = torch.tensor([word is not None for word in attributes], device=device)
        width = self.context_layer.weight.shape[1]
        rows = [
            self.attribute_embedding(word, adapter_name) if word else torch.zeros(width, device=device)
            for word in attributes
        ]
        return torch.stack(rows), has_label

    def reference_text_features(
        self, attributes: list[Optional[str]] | None, adapter_name: str, batch_size: int
    ) -> torch.Tensor:
        """``(B, C, P)`` frozen features of the hand-crafted prompts of ``L_reg``, built once per attribute word."""
        config: IntCoOpConfig = self.peft_config[adapter_name]
        plain = self.zero_shot_text_features(config.class_names, config.template)  # (C, P)
        if config.regularization_prompt == "plain" or attributes is None:
            return plain.expand(batch_size, -1, -1)
        names = config.class_names
        per_image = [
            plain if word is None else self.zero_shot_text_features(names, with_attribute(config.template, word))
            for word in attributes
        ]
        return torch.stack(per_image)

    # ------------------------------------------------------------------------------------------ interpretation
    @torch.no_grad()
    def explain(self, pixel_values: torch.Tensor, adapter_name: str | None = None) -> IntCoOpExplanation:
        """The predictions, the prompt read as words and, per image, the readable words nearest to the predicted
        attribute embedding and the attention of the context over the image tokens."""
        adapter_name = self._explained_adapter(adapter_name)
        config: IntCoOpConfig = self.peft_config[adapter_name]
        tokens, pooled = self.image_features(pixel_values, adapter_name)
        context = self.context_layer.context[adapter_name]
        _, attention = self.intcoop_conditioner[adapter_name](context, tokens)  # (B, M, N)
        predicted = self.intcoop_attribute[adapter_name](pooled)  # (B, D)
        device = pooled.device
        candidates = self._cached(("readable", adapter_name), lambda: self.readable_vocabulary(adapter_name).to(device))
        table = self._cached(
            ("readable units", adapter_name), lambda: F.normalize(self.context_layer.weight[candidates].float(), dim=-1)
        )
        scores = F.normalize(predicted.float(), dim=-1) @ table.T  # (B, V')
        top = scores.topk(min(config.explain_top_k, len(candidates)), dim=-1)
        ids = candidates[top.indices]  # (B, k)
        words = [token_words(self.tokenizer(adapter_name), row.tolist()) for row in ids]
        logits = self(pixel_values=pixel_values).logits
        notes = [
            ["attributes: " + ", ".join(f"{w} {s:.2f}" for w, s in zip(row, scores.tolist()))]
            for row, scores in zip(words, top.values)
        ]
        return IntCoOpExplanation(
            logits=logits,
            predictions=logits.argmax(dim=-1),
            prompt=self.prompt_explanation(adapter_name),
            image_notes=notes,
            attribute_words=words,
            attribute_token_ids=ids,
            attribute_scores=top.values,
            attention=attention,
        )


def attribute_distance(predicted: torch.Tensor, targets: torch.Tensor, kind: str) -> torch.Tensor:
    """Mean ``L_attr`` over ``(R, D)`` rows: ``"mse"`` (mean over dims), ``"cosine"`` (``1 - cos``) or ``"l1"``."""
    if kind == "mse":
        return F.mse_loss(predicted, targets)
    if kind == "l1":
        return F.l1_loss(predicted, targets)
    return (1 - F.cosine_similarity(predicted, targets, dim=-1)).mean()


def with_attribute(template: str, word: str) -> str:
    """``"a photo of a {}."``, ``"green"`` -> ``"a photo of a green {}."`` (the attribute before the class name)."""
    return template.replace("{}", f"{word} {{}}")


def _clean(attributes: list[Optional[str]] | None) -> list[Optional[str]] | None:
    """Strip words; empty ones become ``None`` (no label)."""
    if attributes is None:
        return None
    return [word.strip() if isinstance(word, str) and word.strip() else None for word in attributes]
