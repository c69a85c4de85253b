"""IPL as a PEFT tuner: a learnt context made readable by greedy token selection and anchoring.

IPL plugs into a context learner (``IPLConfig.context_learner``): :class:`IPLModel` adds the selection and the
anchor to CoOp's prompt learner (the shared CLIP prompt core), :class:`IPLIntCoOpModel` to IntCoOp's. PEFT builds
the one class registered for IPL, :class:`IPLModel`, which returns the subclass of the config's context learner.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from ..clip_prompt.model import ClipPromptOutput, ClipPromptTuner, ContextDecoding, ImageBatch
from ..clip_prompt.vocabulary import class_name_words, readable_token_ids
from ..explanation import PromptExplanation
from ..intcoop.model import IntCoOpModel
from .config import IPLConfig
from .selection import greedy_select


class TokenAssignment(nn.Module):
    """The readable token of every context position, ``(M,)`` token ids (-1 before the first selection)."""

    def __init__(self, num_positions: int) -> None:
        super().__init__()
        self.register_buffer("token_ids", torch.full((num_positions,), -1, dtype=torch.long))

    @property
    def done(self) -> bool:
        return bool((self.token_ids >= 0).all())


class IPLModel(ClipPromptTuner):
    """Interpretable Prompt Learning on a ``CLIPModel``.

    Train like the context learner (CoOp by default), calling ``model.on_train_step_begin(step)`` before each
    optimisation step (the trainers of peft-interp do): every ``selection_interval`` steps the context's readable
    tokens are re-selected, and the loss pulls the context toward them. ``model.explain_prompt()`` returns the
    readable prompt.

    The IPL methods below only read the shared context parameter and extend the learner's hooks through ``super()``,
    so they apply to any prompt learner of the shared core: a subclass ``class X(IPLModel, LearnerModel)`` puts
    ``LearnerModel`` between IPL and the core (see :class:`IPLIntCoOpModel`). ``IPLModel(model, config, name)``, as
    PEFT calls it, builds the class of ``config.context_learner``.

    Example:

        ```py
        >>> from transformers import CLIPConfig, CLIPModel
        >>> from peft import get_peft_model
        >>> from peft_interp import IPLConfig

        >>> clip = CLIPModel(CLIPConfig(
        ...     text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2),
        ...     vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        ...                        image_size=32, patch_size=8), projection_dim=16))
        >>> model = get_peft_model(clip, IPLConfig(class_names=["cat", "dog"]))
        >>> model.on_train_step_begin(0)  # selects readable tokens
        >>> len(model.explain_prompt().tokens)
        4

        ```
    """

    prefix = "ipl_"
    shared_module_names = ("ipl_assignment",)
    context_learner = "coop"  # the prompt learner this class makes readable

    def __new__(cls, model=None, peft_config=None, adapter_name=None, *args, **kwargs):
        """PEFT instantiates the class registered for IPL; give it the model of the config's context learner."""
        learner_cls = cls
        if cls is IPLModel and peft_config is not None:  # None: copy / unpickle
            config = peft_config[adapter_name] if isinstance(peft_config, dict) else peft_config
            learner_cls = IPL_MODELS[config.context_learner]
        return super().__new__(learner_cls)

    def _adapter_modules(self, model, config: IPLConfig, adapter_name: str):
        """The context learner's modules and the token assignment as a shared module."""
        if config.context_learner != self.context_learner:
            raise ValueError(
                f"This model's IPL adapters use `context_learner`={self.context_learner!r}; an adapter with "
                f"{config.context_learner!r} needs a model of its own (get_peft_model on a fresh base model)."
            )
        layers, shared = super()._adapter_modules(model, config, adapter_name)
        return layers, {**shared, "ipl_assignment": TokenAssignment(config.num_context_tokens)}

    # ------------------------------------------------------------------------------------------------- selection
    def candidate_ids(self, adapter_name: str | None = None) -> torch.Tensor:
        """Readable candidate token ids under the config's vocabulary filter."""
        adapter_name = adapter_name or self.active_adapters[0]
        config: IPLConfig = self.peft_config[adapter_name]
        excluded = list(config.excluded_words)
        if config.exclude_class_name_words:
            excluded += sorted(class_name_words(config.class_names))
        key = ("candidates", adapter_name, config.min_word_length, config.max_word_length, tuple(excluded))
        tokenizer = self.tokenizer(adapter_name)
        return self._cached(
            key,
            lambda: readable_token_ids(tokenizer, config.min_word_length, config.max_word_length, excluded).to(
                self.context_layer.weight.device
            ),
        )

    def candidate_units(self, adapter_name: str | None = None) -> torch.Tensor:
        """``(V', D)`` L2-normalised token embeddings of the candidates (the token table is frozen: computed once)."""
        adapter_name = adapter_name or self.active_adapters[0]
        candidates = self.candidate_ids(adapter_name)
        key = ("candidate units", adapter_name, tuple(candidates[[0, -1]].tolist()), len(candidates))
        return self._cached(key, lambda: F.normalize(self.context_layer.weight[candidates].detach().float(), dim=-1))

    @torch.no_grad()
    def select_tokens(self, adapter_name: str | None = None) -> ContextDecoding:
        """Run the discrete step now: pick readable tokens for the current context and assign them to positions."""
        adapter_name = adapter_name or self.active_adapters[0]
        config: IPLConfig = self.peft_config[adapter_name]
        context = self.context_layer.context[adapter_name]  # (M, D)
        candidates = self.candidate_ids(adapter_name)
        units = self.candidate_units(adapter_name)  # (V', D)
        relevance = F.normalize(context.float(), dim=-1) @ units.T  # (M, V') cosine similarities
        k = config.num_selected_tokens or config.num_context_tokens
        picked, _ = greedy_select(relevance, units, k, config.redundancy_weight)
        picked = torch.tensor(picked, device=relevance.device)
        assignment = candidates[picked[relevance[:, picked].argmax(dim=1)]]  # (M,) token per position
        self.ipl_assignment[adapter_name].token_ids.copy_(assignment)
        decoding = self._decoding(adapter_name, context, assignment)
        config.readable_prompt = decoding.prompt
        return decoding

    def on_train_step_begin(self, step: int) -> None:
        adapter_name = self.active_adapter_in_use()
        if adapter_name is not None and step % self.peft_config[adapter_name].selection_interval == 0:
            self.select_tokens(adapter_name)

    def _extra_losses(
        self, adapter_name: str, output: ClipPromptOutput, batch: ImageBatch
    ) -> dict[str, tuple[float, torch.Tensor]]:
        """The context learner's own terms plus the pull of each context vector toward its selected word."""
        terms = super()._extra_losses(adapter_name, output, batch)
        assignment = self.ipl_assignment[adapter_name]
        if assignment.done:
            context = self.context_layer.context[adapter_name]
            anchors = self.context_layer.weight[assignment.token_ids].detach()
            anchor_loss = (context - anchors.to(context.dtype)).pow(2).sum(dim=-1).mean()
            terms["anchor"] = (self.peft_config[adapter_name].anchor_weight, anchor_loss)
        return terms

    # ------------------------------------------------------------------------------------------ interpretation
    def explain_prompt(self, adapter_name: str | None = None) -> ContextDecoding:
        """For each context position: the selected token, its distance to the continuous vector, and the readable
        prompt (``{}`` marks the class name). Selects first if no selection was made yet."""
        adapter_name = adapter_name or self.active_adapters[0]
        assignment = self.ipl_assignment[adapter_name]
        if not assignment.done:
            return self.select_tokens(adapter_name)
        with torch.no_grad():
            return self._decoding(adapter_name, self.context_layer.context[adapter_name], assignment.token_ids)

    def prompt_explanation(self, adapter_name: str | None = None) -> PromptExplanation:
        """IPL's selected words as the readable prompt, beside the context learner's nearest-token decoding."""
        explanation = super().prompt_explanation(adapter_name)
        selected = dataclasses.replace(self.explain_prompt(adapter_name), how="IPL's selected words")
        return dataclasses.replace(explanation, readable=selected)

    def explanation_metadata(self, adapter_name: str | None = None) -> dict:
        """Class names, template and the selected readable words (with each vector's distance to its word)."""
        adapter_name = adapter_name or self.active_adapters[0]
        decoding = self.explain_prompt(adapter_name)
        return {
            **super().explanation_metadata(adapter_name),
            "template": self.peft_config[adapter_name].template,
            "readable_prompt": decoding.prompt,
            "context_tokens": decoding.tokens,
            "context_distances": decoding.distances.tolist(),
        }


class IPLIntCoOpModel(IPLModel, IntCoOpModel):
    """IPL over IntCoOp's prompt learner (``IPLConfig(context_learner="intcoop")``).

    Prompts, forward (``pixel_values``, ``labels``, ``attributes``), losses and ``explain`` are IntCoOp's (settings:
    ``IPLConfig.intcoop``); IPL selects readable words for the shared context vectors ``v_i`` and adds the anchor
    loss to IntCoOp's terms. The image-conditioned offsets and the attribute slot stay continuous.
    """

    context_learner = "intcoop"
    shared_module_names = IPLModel.shared_module_names + IntCoOpModel.shared_module_names

    def _decoding(self, adapter_name: str, context: torch.Tensor, token_ids: torch.Tensor) -> ContextDecoding:
        """As the core's, with IntCoOp's per-image attribute slot before the class name in the readable prompt."""
        decoding = super()._decoding(adapter_name, context, token_ids)
        return dataclasses.replace(decoding, prompt=" ".join(decoding.tokens) + " [attribute] {}.")


IPL_MODELS = {"coop": IPLModel, "intcoop": IPLIntCoOpModel}  # context learner -> model class
