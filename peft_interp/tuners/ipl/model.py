"""IPL as a PEFT tuner: a hybrid prompt of selected readable words between learnt vectors.

IPL plugs into a *context learner* (``IPLConfig.context_learner``): :class:`IPLModel` adds the word slots and the
greedy selection to CoOp's prompt learner (the shared CLIP prompt core), :class:`IPLIntCoOpModel` to IntCoOp's.
PEFT builds the one class registered for IPL, :class:`IPLModel`, which returns the class of the config's learner.

What a context learner must provide to be plugged in (:func:`register_context_learner`):

* it is a :class:`~peft_interp.tuners.clip_prompt.ClipPromptTuner` subclass with a shared ``(M, D)`` context
  parameter (``_initial_context``), ``M = config.num_context_tokens``;
* its ``_prompt_layout(config, class_name)`` starts with the integer segment ``config.num_context_tokens``: the
  soft context span. IPL splits that span around its word slots, ``[A_1 w_1 .. A_K w_K P]``, and keeps the rest of
  the learner's layout (e.g. IntCoOp's attribute slot and the class name);
* its ``_prompt_context`` returns the rows of the soft positions in order (``(C, S, D)`` or per image
  ``(B, C, S, D)``), the first ``M`` being the context span: any image conditioning (CoCoOp's meta-net bias,
  IntCoOp's attention) stays the learner's own, and applies to the learnt vectors only, never to the words;
* its own losses come through ``_extra_losses``, its forward through the core's (or its own) ``forward``;
* a learner with deep text prompts (MaPLe, PromptSRC: :class:`~peft_interp.tuners.maple.model.DeepPromptTuner`)
  reads which context rows they take over from ``_deep_context_rows``: IPL's hybrid prompt gives only the class
  context ``P``, so the deep prompts are ``(J - 1, num_class_context_tokens, D)`` and the anchors ``A_k`` and the
  words keep the hidden states that flow from the blocks below (ATPrompt's deep variant, Li et al., ICCV 2025,
  github.com/zhengli97/ATPrompt ``trainers/maple_atp.py``; MaPLe's coupling ``F_0`` maps ``P`` to the vision
  prompts there too);
* its config class (a :class:`~peft_interp.tuners.clip_prompt.ClipPromptConfig`) gives its settings, set through
  ``IPLConfig(learner_settings={...})``.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from ..clip_prompt.model import ClipPromptOutput, ClipPromptTuner, ContextDecoding, ImageBatch
from ..clip_prompt.prompts import Segment
from ..clip_prompt.vocabulary import class_name_words, readable_token_ids, token_words
from ..explanation import PromptExplanation, PromptPosition
from ..intcoop.model import IntCoOpModel
from .config import LEARNER_CONFIGS, IPLConfig
from .selection import SelectionStep, TaskLossSelector, greedy_select

SOFT_MARK = "*"  # one learnt vector in a readable prompt


class TokenAssignment(nn.Module):
    """Token ids: the word of every slot (hybrid) or of every context position (coverage_anchor); -1 = none yet."""

    def __init__(self, num_positions: int) -> None:
        super().__init__()
        self.register_buffer("token_ids", torch.full((num_positions,), -1, dtype=torch.long))

    @property
    def done(self) -> bool:
        return bool((self.token_ids >= 0).all())

    @property
    def filled(self) -> int:
        return int((self.token_ids >= 0).sum())


@dataclass
class HybridPromptDecoding(ContextDecoding):
    """Readable view of a hybrid IPL prompt.

    The inherited fields describe the ``M`` learnt vectors (nearest readable word, distance, cosine); ``prompt`` is
    the prompt as the model reads it, words in their slots and one ``*`` per learnt vector, e.g.
    ``"* * bright * * striped * * {}."``.

    Args:
        words: the ``K`` slot words in order (the placeholder where a slot is still empty).
        word_ids: ``(K,)`` their token ids (-1 where empty).
        probe_prompt: the discrete probe prompt of the selection, ``"a photo of a {}, with emphasis on: w_1, w_2"``.
        decoded_prompt: ``prompt`` with each ``*`` replaced by ``[nearest word]`` of its vector.
        positions: the prompt position by position: each word (similarity 1.0), each learnt vector as its nearest
            readable word with its cosine, the learner's other slots and the class name, in the model's order.
    """

    words: list[str] = dataclasses.field(default_factory=list)
    word_ids: Optional[torch.Tensor] = None
    probe_prompt: str = ""
    decoded_prompt: str = ""
    positions: list[PromptPosition] = dataclasses.field(default_factory=list)


@dataclass
class SelectionData:
    """What the greedy steps of one adapter read: the selector (cached features) and the epoch length."""

    selector: TaskLossSelector
    steps_per_epoch: int
    history: list[SelectionStep]


class IPLModel(ClipPromptTuner):
    """Interpretable Prompt Learning on a ``CLIPModel``.

    Default (``variant="hybrid"``): prompts ``[SOS] A_1 w_1 .. A_K w_K P <class>. [EOS]``, the words ``w_k`` chosen
    greedily by the task loss of a discrete probe prompt on the training images, one every
    ``selection_block_epochs`` epochs. The trainers of peft-interp call ``on_train_begin(dataset, collate_fn,
    steps_per_epoch)`` (which encodes the training images once) and ``on_train_step_begin(step)`` (which runs the
    greedy steps that are due); in a loop of your own, call ``set_selection_data(image_embeds, labels,
    steps_per_epoch)`` then ``on_train_step_begin(step)``, or ``select_next_word()`` directly.

    Example:

        ```py
        >>> import torch
        >>> from transformers import CLIPConfig, CLIPModel
        >>> from peft import get_peft_model
        >>> from peft_interp import IPLConfig

        >>> clip = CLIPModel(CLIPConfig(
        ...     text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2),
        ...     vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        ...                        image_size=32, patch_size=8), projection_dim=16))
        >>> model = get_peft_model(clip, IPLConfig(class_names=["cat", "dog"], vocabulary_size=200))
        >>> model.explain_prompt().prompt  # two empty word slots ("0") between learnt vectors
        '* * 0 * * 0 * * {}.'
        >>> features, labels = torch.nn.functional.normalize(torch.randn(8, 16), dim=-1), torch.tensor([0, 1] * 4)
        >>> model.set_selection_data(features, labels, steps_per_epoch=4)
        >>> model.on_train_step_begin(0)  # epoch 0: the first word
        >>> len(model.explain_prompt().prompt.split())
        9

        ```
    """

    prefix = "ipl_"
    shared_module_names = ("ipl_assignment",)
    context_learner = "coop"  # the prompt learner this class makes readable
    extra_soft_mark = SOFT_MARK  # how the learner's soft positions after the context span read
    extra_soft_note = "set by the context learner"  # what they are, on explanation pages

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
        slots = config.num_words if config.variant == "hybrid" else config.num_context_tokens
        layers, shared = super()._adapter_modules(model, config, adapter_name)
        return layers, {**shared, "ipl_assignment": TokenAssignment(slots)}

    # ------------------------------------------------------------------------------------------- hybrid prompt
    def _initial_context(self, config: IPLConfig, adapter_name: str) -> torch.Tensor:
        """Hybrid without ``context_init``: ``A_k`` from N(0, 0.01), ``P`` from N(0, 0.02) (the reference trainer)."""
        if config.variant != "hybrid" or config.context_init:
            return super()._initial_context(config, adapter_name)
        width = self.model.get_submodule("text_model.embeddings.token_embedding").weight.shape[1]
        anchors = config.num_words * config.tokens_per_word
        std = torch.tensor([0.01] * anchors + [0.02] * config.num_class_context_tokens)[:, None]
        return torch.randn(config.num_context_tokens, width) * std

    def _deep_context_rows(self, config: IPLConfig) -> slice:
        """Context rows that a deep-prompt learner's deep text prompts take over (see the module docstring): hybrid,
        the class context ``P`` (the last ``num_class_context_tokens`` rows, after every ``A_k``); coverage_anchor,
        the whole context."""
        if config.variant != "hybrid":
            return slice(0, config.num_context_tokens)
        return slice(config.num_context_tokens - config.num_class_context_tokens, config.num_context_tokens)

    def slot_words(self, adapter_name: str) -> list[str]:
        """The ``K`` slot words, the placeholder where a slot is still empty."""
        config: IPLConfig = self.peft_config[adapter_name]
        ids = self.ipl_assignment[adapter_name].token_ids.tolist()
        words = token_words(self.tokenizer(adapter_name), [i for i in ids if i >= 0])
        return words + [config.placeholder_word] * (len(ids) - len(words))

    def hybrid_layout(self, config: IPLConfig, class_name: str, words: list[str]) -> list[Segment]:
        """The learner's layout with its context span split around the word slots: ``[n, w_1, .., n, w_K, P, ..]``."""
        learner = self._prompt_layout(config, class_name)
        if not learner or learner[0] != config.num_context_tokens:
            raise ValueError(
                f"IPL needs a learner whose prompt layout starts with its {config.num_context_tokens} context vectors; "
                f"{type(self).__name__} gives {learner!r}."
            )
        span: list[Segment] = []
        for word in words:
            span += [config.tokens_per_word, word]
        return [*span, config.num_class_context_tokens, *learner[1:]]

    def prompts(self, adapter_name: str):
        """Token ids and soft positions of the class prompts; hybrid: the word slots hold the selected words."""
        config: IPLConfig = self.peft_config[adapter_name]
        if config.variant != "hybrid":
            return super().prompts(adapter_name)
        words = self.slot_words(adapter_name)
        layouts = [self.hybrid_layout(config, name, words) for name in config.class_names]
        return self._cached(("prompts", adapter_name, repr(layouts)), lambda: self._build(adapter_name, layouts))

    # ------------------------------------------------------------------------------------------------ vocabulary
    def candidate_ids(self, adapter_name: str | None = None) -> torch.Tensor:
        """Readable candidate token ids under the config's vocabulary filter (hybrid: the ``vocabulary_size`` most
        frequent, never the placeholder)."""
        adapter_name = adapter_name or self.active_adapters[0]
        config: IPLConfig = self.peft_config[adapter_name]
        excluded = list(config.excluded_words)
        if config.exclude_class_name_words:
            excluded += sorted(class_name_words(config.class_names))
        cap = config.vocabulary_size if config.variant == "hybrid" else None
        if config.variant == "hybrid":
            excluded.append(config.placeholder_word)
        key = ("candidates", adapter_name, config.min_word_length, config.max_word_length, tuple(excluded), cap)
        tokenizer = self.tokenizer(adapter_name)

        def compute():
            ids = readable_token_ids(tokenizer, config.min_word_length, config.max_word_length, excluded)
            return ids[:cap].to(self.context_layer.weight.device)

        return self._cached(key, compute)

    # ------------------------------------------------------------------------------------------- hybrid selection
    def on_train_begin(self, train_dataset, collate_fn, steps_per_epoch: int) -> None:
        """Hybrid: encode the training images once (frozen, unprompted image tower) for the greedy steps."""
        adapter_name = self.active_adapter_in_use()
        if adapter_name is None or self.peft_config[adapter_name].variant != "hybrid":
            return
        device = self.context_layer.weight.device
        features, labels = [], []
        for start in range(0, len(train_dataset), 64):
            batch = collate_fn([train_dataset[i] for i in range(start, min(start + 64, len(train_dataset)))])
            features.append(self.frozen_image_features(batch["pixel_values"].to(device)))
            labels.append(batch["labels"].to(device))
        self.set_selection_data(torch.cat(features), torch.cat(labels), steps_per_epoch, adapter_name)

    @torch.no_grad()
    def frozen_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``(B, P)`` normalised features of the frozen CLIP image tower, without any of the adapter's prompts."""
        layers = [module for module in self.model.modules() if isinstance(module, BaseTunerLayer)]
        saved = [layer._disable_adapters for layer in layers]
        for layer in layers:  # no trainable-flag changes, unlike disable_adapter_layers / enable_adapter_layers
            layer._disable_adapters = True
        try:
            return F.normalize(self.model.get_image_features(pixel_values=pixel_values).pooler_output.float(), dim=-1)
        finally:
            for layer, disabled in zip(layers, saved):
                layer._disable_adapters = disabled

    def set_selection_data(
        self, image_embeds: torch.Tensor, labels: torch.Tensor, steps_per_epoch: int, adapter_name: str | None = None
    ) -> None:
        """Give the greedy steps the training images' features ``(N, P)`` (un-augmented) and labels ``(N,)``, and the
        number of optimiser steps per epoch (for the schedule of ``on_train_step_begin``)."""
        adapter_name = adapter_name or self.active_adapters[0]
        config: IPLConfig = self.peft_config[adapter_name]
        if config.variant != "hybrid":
            raise ValueError("`set_selection_data` is for variant='hybrid'; coverage_anchor selects without images.")
        if not isinstance(steps_per_epoch, int) or steps_per_epoch < 1:
            raise ValueError(f"`steps_per_epoch` must be a positive int, got {steps_per_epoch!r}.")
        selector = TaskLossSelector(
            self.model, self.tokenizer(adapter_name), config.class_names, config.probe_template,
            image_embeds.to(self.context_layer.weight.device), labels.to(self.context_layer.weight.device),
            self.candidate_ids(adapter_name), redundancy_weight=config.redundancy_weight,
            prefilter_size=config.prefilter_size, lazy_greedy=config.lazy_greedy, lazy_batch_size=config.lazy_batch_size,
        )  # fmt: skip
        self.__dict__.setdefault("_selection", {})[adapter_name] = SelectionData(selector, steps_per_epoch, [])

    def selection_history(self, adapter_name: str | None = None) -> list[SelectionStep]:
        """The greedy steps run since ``set_selection_data`` (word, objective, exact evaluations, seconds)."""
        data = self.__dict__.get("_selection", {}).get(adapter_name or self.active_adapters[0])
        return list(data.history) if data else []

    def select_next_word(self, adapter_name: str | None = None) -> SelectionStep:
        """Run one greedy step now and write the word into the next empty slot."""
        adapter_name = adapter_name or self.active_adapters[0]
        config: IPLConfig = self.peft_config[adapter_name]
        data = self.__dict__.get("_selection", {}).get(adapter_name)
        if data is None:
            raise ValueError(
                "IPL selects words by the task loss on the training images: the trainers of peft-interp pass them "
                "(on_train_begin); in a loop of your own call "
                "`model.base_model.set_selection_data(image_embeds, labels, steps_per_epoch)` first."
            )
        if data.selector.class_names != list(config.class_names):
            raise ValueError("The class names changed since `set_selection_data`: select on the training classes.")
        assignment = self.ipl_assignment[adapter_name]
        if assignment.done:
            raise ValueError(f"All {len(assignment.token_ids)} word slots are filled.")
        step = data.selector.step(assignment.token_ids[: assignment.filled].tolist())
        assignment.token_ids[assignment.filled] = step.token_id
        data.history.append(step)
        config.readable_prompt = self.explain_prompt(adapter_name).prompt
        return step

    def on_train_step_begin(self, step: int) -> None:
        """Hybrid: before the first step of epoch ``e``, fill the slots up to ``min(K, e // block + 1)`` words.
        coverage_anchor: re-select every ``selection_interval`` steps."""
        adapter_name = self.active_adapter_in_use()
        if adapter_name is None:
            return
        config: IPLConfig = self.peft_config[adapter_name]
        if config.variant != "hybrid":
            if step % config.selection_interval == 0:
                self.select_tokens(adapter_name)
            return
        data = self.__dict__.get("_selection", {}).get(adapter_name)
        epoch = step // data.steps_per_epoch if data else 0
        due = min(config.num_words, epoch // config.selection_block_epochs + 1)
        while self.ipl_assignment[adapter_name].filled < due:
            self.select_next_word(adapter_name)

    # --------------------------------------------------------------------------------- coverage_anchor variant
    @torch.no_grad()
    def select_tokens(self, adapter_name: str | None = None) -> ContextDecoding:
        """``variant="coverage_anchor"``: pick readable tokens for the current context and assign them to positions."""
        adapter_name = adapter_name or self.active_adapters[0]
        config: IPLConfig = self.peft_config[adapter_name]
        if config.variant == "hybrid":
            raise ValueError("`select_tokens` is the coverage_anchor variant's step; the hybrid prompt's is "
                             "`select_next_word` (or `on_train_step_begin`).")  # fmt: skip
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

    def candidate_units(self, adapter_name: str | None = None) -> torch.Tensor:
        """``(V', D)`` L2-normalised token embeddings of the candidates (the token table is frozen: computed once)."""
        adapter_name = adapter_name or self.active_adapters[0]
        candidates = self.candidate_ids(adapter_name)
        key = ("candidate units", adapter_name, tuple(candidates[[0, -1]].tolist()), len(candidates))
        return self._cached(key, lambda: F.normalize(self.context_layer.weight[candidates].detach().float(), dim=-1))

    def _extra_losses(
        self, adapter_name: str, output: ClipPromptOutput, batch: ImageBatch
    ) -> dict[str, tuple[float, torch.Tensor]]:
        """The context learner's own terms; coverage_anchor adds the pull of each vector toward its word."""
        terms = super()._extra_losses(adapter_name, output, batch)
        config: IPLConfig = self.peft_config[adapter_name]
        assignment = self.ipl_assignment[adapter_name]
        if config.variant == "hybrid" and self.training and assignment.filled == 0 and not self.__dict__.get("_warned"):
            self._warned = True
            warnings.warn("IPL is training with every word slot empty: call `on_train_step_begin(step)` before each "
                          "step (after `set_selection_data`); the peft-interp trainers do both.", stacklevel=2)  # fmt: skip
        if config.variant != "hybrid" and assignment.done:
            context = self.context_layer.context[adapter_name]
            anchors = self.context_layer.weight[assignment.token_ids].detach()
            anchor_loss = (context - anchors.to(context.dtype)).pow(2).sum(dim=-1).mean()
            terms["anchor"] = (config.anchor_weight, anchor_loss)
        return terms

    # ------------------------------------------------------------------------------------------ interpretation
    def explain_prompt(self, adapter_name: str | None = None) -> ContextDecoding:
        """The readable prompt. Hybrid: a :class:`HybridPromptDecoding` (the words in their slots, one ``*`` per
        learnt vector, and the nearest readable word of each vector). coverage_anchor: per context position its
        selected word and distance (selects first if no selection was made yet)."""
        adapter_name = adapter_name or self.active_adapters[0]
        config: IPLConfig = self.peft_config[adapter_name]
        if config.variant == "hybrid":
            return self._hybrid_decoding(adapter_name)
        assignment = self.ipl_assignment[adapter_name]
        if not assignment.done:
            return self.select_tokens(adapter_name)
        with torch.no_grad():
            return self._decoding(adapter_name, self.context_layer.context[adapter_name], assignment.token_ids)

    def prompt_explanation(self, adapter_name: str | None = None) -> PromptExplanation:
        """Hybrid: the prompt position by position (selected words, learnt vectors as their nearest readable words),
        with the nearest tokens of the whole vocabulary for the learnt vectors. coverage_anchor: IPL's selected
        words as the readable prompt, beside the context learner's nearest-token decoding."""
        explanation = super().prompt_explanation(adapter_name)
        decoding = self.explain_prompt(adapter_name)
        if isinstance(decoding, HybridPromptDecoding):
            readable = dataclasses.replace(decoding, how="nearest readable word of each learnt vector")
            return dataclasses.replace(explanation, readable=readable, positions=list(decoding.positions))
        selected = dataclasses.replace(decoding, how="IPL's selected words")
        return dataclasses.replace(explanation, readable=selected)

    @torch.no_grad()
    def _hybrid_decoding(self, adapter_name: str) -> HybridPromptDecoding:
        config: IPLConfig = self.peft_config[adapter_name]
        words = self.slot_words(adapter_name)
        readable = self.readable_vocabulary(adapter_name, exclude_words=class_name_words(config.class_names))
        soft = self.decode_context(adapter_name, candidate_ids=readable)  # nearest readable word of each vector
        layout = self.hybrid_layout(config, "{}", words)
        ids = self.ipl_assignment[adapter_name].token_ids.clone()
        vectors = iter(zip(soft.tokens, soft.similarities.tolist()))
        slots = iter(ids.tolist())  # the first K text segments of the layout are the word slots
        plain, decoded, positions, seen = [], [], [], 0
        for segment in layout:
            if isinstance(segment, int):
                for _ in range(segment):
                    if seen < config.num_context_tokens:
                        token, similarity = next(vectors)
                        plain.append(SOFT_MARK)
                        decoded.append(f"[{token}]")
                        positions.append(PromptPosition(token, "learnt", similarity, "learnt vector"))
                    else:
                        plain.append(self.extra_soft_mark)
                        decoded.append(self.extra_soft_mark)
                        positions.append(PromptPosition(self.extra_soft_mark, "slot", None, self.extra_soft_note))
                    seen += 1
                continue
            plain.append(segment)
            decoded.append(segment)
            token_id = next(slots, None)
            if token_id is None:  # the learner's text after the context span: the class name
                note = "class name" if "{}" in segment else "fixed text"
                positions.append(PromptPosition(segment.replace("{}", "[class]"), "slot", None, note))
            else:
                note = "selected word, frozen" if token_id >= 0 else "empty word slot (placeholder)"
                positions.append(PromptPosition(segment, "word", 1.0, note))
        filled = [word for word, token_id in zip(words, ids.tolist()) if token_id >= 0]
        probe_text = " ".join([config.probe_template, ", ".join(filled)]) if filled else config.probe_template
        return HybridPromptDecoding(
            **{f.name: getattr(soft, f.name) for f in dataclasses.fields(ContextDecoding) if f.name != "prompt"},
            prompt=" ".join(plain), words=words, word_ids=ids, probe_prompt=probe_text, decoded_prompt=" ".join(decoded),
            positions=positions,
        )  # fmt: skip

    def explanation_metadata(self, adapter_name: str | None = None) -> dict:
        """Class names, template and the readable prompt; ``context_tokens`` / ``context_similarities`` /
        ``context_distances`` read each learnt vector (hybrid: as its nearest readable word; coverage_anchor: as its
        selected word), ``nearest_tokens`` as its nearest token of the whole vocabulary. Hybrid adds the selected
        words, the probe prompt, the decoded prompt and ``prompt_positions``: the prompt position by position as the
        explanation page draws it (``text``, ``kind`` word / learnt / slot, ``similarity``, ``note``)."""
        adapter_name = adapter_name or self.active_adapters[0]
        decoding = self.explain_prompt(adapter_name)
        metadata = {
            **super().explanation_metadata(adapter_name),
            "template": self.peft_config[adapter_name].template,
            "readable_prompt": decoding.prompt,
            "context_tokens": decoding.tokens,
            "context_similarities": decoding.similarities.tolist(),
            "context_distances": decoding.distances.tolist(),
            "nearest_tokens": self.decode_context(adapter_name).tokens,
        }
        if isinstance(decoding, HybridPromptDecoding):
            metadata.update(selected_words=decoding.words, probe_prompt=decoding.probe_prompt,
                            decoded_prompt=decoding.decoded_prompt,
                            prompt_positions=[dataclasses.asdict(p) for p in decoding.positions])  # fmt: skip
        return metadata


class IPLIntCoOpModel(IPLModel, IntCoOpModel):
    """IPL over IntCoOp's prompt learner (``IPLConfig(context_learner="intcoop")``).

    Prompts, forward (``pixel_values``, ``labels``, ``attributes``), losses and ``explain`` are IntCoOp's (settings:
    ``IPLConfig.intcoop``). Hybrid: ``[SOS] A_1(x) w_1 .. A_K(x) w_K P(x) A(x) <class>. [EOS]``, the image-conditioned
    offsets on the learnt vectors only, the attribute slot ``A(x)`` before the class name. coverage_anchor: words are
    selected for, and anchor, the shared vectors ``v_i``.
    """

    context_learner = "intcoop"
    shared_module_names = IPLModel.shared_module_names + IntCoOpModel.shared_module_names
    extra_soft_mark = "[attribute]"
    extra_soft_note = "predicted attribute, per image"

    def _decoding(self, adapter_name: str, context: torch.Tensor, token_ids: torch.Tensor) -> ContextDecoding:
        """As the core's, with IntCoOp's per-image attribute slot before the class name in the readable prompt."""
        decoding = super()._decoding(adapter_name, context, token_ids)
        if self.peft_config[adapter_name].variant == "hybrid":
            return decoding
        return dataclasses.replace(decoding, prompt=" ".join(decoding.tokens) + " [attribute] {}.")


IPL_MODELS: dict[str, type] = {"coop": IPLModel, "intcoop": IPLIntCoOpModel}  # context learner -> model class


def register_context_learner(name: str, learner_cls: type, config_cls: type) -> type:
    """Make IPL plug into another prompt learner (see this module's docstring for what it must provide).

    Args:
        name: the value of ``IPLConfig.context_learner`` that selects it.
        learner_cls: its tuner class (a ``ClipPromptTuner`` subclass).
        config_cls: its config class; its own fields are set through ``IPLConfig(learner_settings=...)``.

    Returns:
        The IPL model class over that learner, ``class IPL<Learner>(IPLModel, learner_cls)``.
    """
    if not issubclass(learner_cls, ClipPromptTuner):
        raise TypeError(f"A context learner must be a ClipPromptTuner subclass, got {learner_cls.__name__}.")
    if name in IPL_MODELS:
        raise ValueError(f"A context learner named {name!r} is already registered.")
    shared = IPLModel.shared_module_names + tuple(getattr(learner_cls, "shared_module_names", ()))
    model_cls = type(f"IPL{learner_cls.__name__}", (IPLModel, learner_cls),
                     {"context_learner": name, "shared_module_names": shared, "__module__": __name__})  # fmt: skip
    IPL_MODELS[name] = model_cls
    LEARNER_CONFIGS[name] = config_cls
    return model_cls
