"""The BaseTuner shared by every CLIP text-prompt method (CoOp, IPL, IntCoOp, DualViewMI).

It wraps ``text_model.embeddings.token_embedding`` of a ``CLIPModel`` in a
:class:`~peft_interp.tuners.layers.ContextEmbedding` (which holds the learnt context) and scores images against
the prompts of the configured classes::

    logits = logit_scale.exp() * normalise(image_features) @ normalise(text_features(prompt_c)).T    (B, C)

What makes it fast:

* prompts are cut to the longest EOS position (:mod:`.prompts`): same features as 77 tokens, a fraction of the cost;
* the text features of the C prompts are computed once per forward, whatever the batch size;
* the image tower is frozen and unprompted, so image features are computed without autograd and, with
  ``cache_image_features=True``, once per image (keyed by its pixels) across epochs;
* zero-shot text features (the hand-crafted template) are computed once per class list.

A method customises five hooks: ``_initial_context`` (the context parameter), ``_prompt_layout`` (where soft and
fixed tokens go), ``_prompt_context`` (the per-row context, e.g. conditioned on the image), ``_extra_losses`` (its
loss terms beside the cross-entropy) and ``_inference_logits`` (eval-mode logits, e.g. fused with another view).
What one forward pass knows about its images reaches the last three as an argument, an :class:`ImageBatch` (a method
with more per-image inputs, such as IntCoOp's attribute words, subclasses it and builds it in its ``forward``), so
the forward pass itself is written once, here. With adapters disabled the model is zero-shot CLIP with the config's
hand-crafted template.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from transformers import CLIPModel
from transformers.utils import ModelOutput

from ..base import InterpTuner, LayerPlan
from ..explanation import ContextDecoding, Explanation, PromptExplanation
from ..layers import ContextEmbedding
from ..recipe import COOP_RECIPE, TrainingRecipe
from .config import ClipPromptConfig, validated_class_names
from .prompts import PromptBatch, Segment, build_prompts, fill_template, prompt_class_name
from .vocabulary import readable_token_ids, token_words, word_token_ids

TOKEN_EMBEDDING = "text_model.embeddings.token_embedding"


@dataclass
class ClipPromptOutput(ModelOutput):
    """Output of a CLIP prompt tuner.

    Args:
        loss: cross-entropy (plus the method's own terms) when ``labels`` were given.
        logits: ``(B, C)`` over the configured class names.
        image_embeds: ``(B, P)`` L2-normalised image features.
        text_embeds: ``(C, P)`` (or ``(B, C, P)`` for image-conditioned prompts) L2-normalised class features.
        loss_terms: the unweighted loss terms.
    """

    loss: Optional[torch.Tensor] = None
    logits: Optional[torch.Tensor] = None
    image_embeds: Optional[torch.Tensor] = None
    text_embeds: Optional[torch.Tensor] = None
    loss_terms: Optional[dict[str, torch.Tensor]] = None


@dataclass
class ImageBatch:
    """The images of one forward pass, as the prompt hooks see them.

    Args:
        image_embeds: ``(B, P)`` L2-normalised image features.
        labels: ``(B,)`` class indices, or ``None`` (no loss).
        pixel_values: ``(B, 3, S, S)`` the images, or ``None`` when the caller gave ``image_embeds`` (read by losses
            that compare with another image tower, e.g. PromptSRC's frozen CLIP).
    """

    image_embeds: torch.Tensor
    labels: Optional[torch.Tensor] = None
    pixel_values: Optional[torch.Tensor] = None


def load_tokenizer(name_or_path: str | None):
    """The CLIP tokenizer of a config: the shipped OpenAI BPE vocabulary unless a name or path is given."""
    if name_or_path is None:
        from ...data.tokenizer import load_clip_tokenizer

        return load_clip_tokenizer()
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(name_or_path)


def pixel_digest(image: torch.Tensor) -> str:
    """SHA-1 of an image's dtype, shape and raw bytes (any dtype, bfloat16 included: NumPy has none)."""
    data = image.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy()
    header = f"{image.dtype}{tuple(image.shape)}".encode()
    return hashlib.sha1(header + data.tobytes()).hexdigest()


class ClipPromptTuner(InterpTuner):
    # True for methods that prompt the image tower: their image features depend on the adapter, so ``forward``
    # refuses precomputed ``image_embeds`` while one is active.
    prompts_image_tower: bool = False

    # ------------------------------------------------------------------------------------------ method hooks
    def _initial_context(self, config: ClipPromptConfig, adapter_name: str) -> torch.Tensor:
        """The context parameter: ``(M, D)`` or, class-specific, ``(C, M, D)``."""
        embedding = self.model.get_submodule(TOKEN_EMBEDDING)
        num_tokens, width = config.num_context_tokens, embedding.weight.shape[1]
        if config.context_init:
            ids = self.tokenizer(adapter_name).encode(config.context_init, add_special_tokens=False)
            if len(ids) != num_tokens:
                raise ValueError(
                    f"`context_init`={config.context_init!r} is {len(ids)} tokens but `num_context_tokens` is "
                    f"{num_tokens}: give words that tokenise to exactly {num_tokens} tokens, or None."
                )
            context = embedding.weight[ids].detach().float().clone()
        else:
            context = torch.randn(num_tokens, width) * 0.02
        if config.class_specific_context:
            context = context.expand(len(config.class_names), -1, -1).clone()
        return context

    def _prompt_layout(self, config: ClipPromptConfig, class_name: str) -> list[Segment]:
        """Segments of one class's prompt (see :mod:`.prompts`); CoOp: ``[M, "<class>."]``. ``class_name`` is already
        in prompt form (:func:`.prompts.prompt_class_name`: ``_`` read as a space)."""
        return [config.num_context_tokens, f"{class_name}."]

    def _prompt_context(self, adapter_name: str, batch: ImageBatch | None) -> torch.Tensor:
        """Context of every prompt row, ``(C, M, D)``; a ``(B, C, M, D)`` result makes prompts per image. The core's
        context does not depend on the images (``batch`` may be ``None``)."""
        context = self.context_layer.context[adapter_name]
        num_classes = len(self.peft_config[adapter_name].class_names)
        return context if context.ndim == 3 else context.expand(num_classes, -1, -1)

    def _extra_losses(
        self, adapter_name: str, output: ClipPromptOutput, batch: ImageBatch
    ) -> dict[str, tuple[float, torch.Tensor]]:
        """Method-specific loss terms ``{name: (weight, value)}`` added to the cross-entropy, in the order they are
        reported (called when ``batch.labels`` is set and an adapter is active; a subclass adds to ``super()``'s)."""
        return {}

    def _inference_logits(self, adapter_name: str, output: ClipPromptOutput, batch: ImageBatch) -> torch.Tensor:
        """The ``(B, C)`` logits returned in eval mode with an adapter active (the loss is always on
        ``output.logits``, the logits of the learnt prompts). The core's: ``output.logits``."""
        return output.logits

    def training_recipe(self) -> TrainingRecipe:
        """The CoOp family's SGD + cosine protocol, at the config's ``learning_rate`` when it has one."""
        config = self.peft_config[self.active_adapters[0]]
        return COOP_RECIPE.override(learning_rate=getattr(config, "learning_rate", None))

    # ------------------------------------------------------------------------------------------------- injection
    def _adapter_modules(self, model, config: ClipPromptConfig, adapter_name: str):
        """The token embedding, wrapped in a :class:`ContextEmbedding` holding the initial context."""
        if not isinstance(model, CLIPModel):
            raise ValueError(f"{type(self).__name__} adapts a CLIPModel (both towers), got {type(model).__name__}.")
        tokenizer = self.tokenizer(adapter_name)
        vocab_size = model.config.text_config.vocab_size
        if len(tokenizer) != vocab_size:
            raise ValueError(
                f"`tokenizer_name_or_path` gives a tokenizer of {len(tokenizer)} tokens but the model's text tower "
                f"has {vocab_size}: use the model's own CLIP tokenizer."
            )
        config.target_modules = [TOKEN_EMBEDDING]
        return {TOKEN_EMBEDDING: LayerPlan(ContextEmbedding, (self._initial_context(config, adapter_name),))}, {}

    @property
    def context_layer(self) -> ContextEmbedding:
        return self.model.get_submodule(TOKEN_EMBEDDING)

    def tokenizer(self, adapter_name: str | None = None):
        """The active (or named) adapter's tokenizer, loaded once."""
        config = self.peft_config[adapter_name or self.active_adapters[0]]
        cache = self.__dict__.setdefault("_tokenizers", {})
        if config.tokenizer_name_or_path not in cache:
            cache[config.tokenizer_name_or_path] = load_tokenizer(config.tokenizer_name_or_path)
        return cache[config.tokenizer_name_or_path]

    # ------------------------------------------------------------------------------------------------- classes
    def set_class_names(self, class_names: list[str], adapter_name: str | None = None) -> None:
        """Score a new class list (e.g. base -> novel) with the learnt prompt; nothing is retrained."""
        adapter_name = adapter_name or self.active_adapters[0]
        config = self.peft_config[adapter_name]
        if config.class_specific_context and len(class_names) != len(config.class_names):
            raise ValueError(
                "`class_specific_context=True` learnt one context per training class; it cannot score "
                f"{len(class_names)} other classes. Use a shared context to transfer to new classes."
            )
        config.class_names = validated_class_names(class_names)

    # -------------------------------------------------------------------------------------------------- features
    def prompts(self, adapter_name: str) -> PromptBatch:
        """Token ids and soft positions of the adapter's class prompts (built once per class list and layout)."""
        config = self.peft_config[adapter_name]
        layouts = [self._prompt_layout(config, prompt_class_name(name)) for name in config.class_names]
        return self._cached(("prompts", adapter_name, repr(layouts)), lambda: self._build(adapter_name, layouts))

    def _build(self, adapter_name: str, layouts: list[list[Segment]]) -> PromptBatch:
        device = self.context_layer.weight.device
        return build_prompts(self.tokenizer(adapter_name), layouts).to(device)

    def _cached(self, key, compute):
        """Memoise tensors that depend only on frozen weights and ``key``, per device and dtype of the weights (so
        ``model.to(torch.float64)`` or ``.to("cuda")`` never reuses features computed before)."""
        cache = self.__dict__.setdefault("_feature_cache", {})
        weight = self.context_layer.weight
        key = (*key, str(weight.device), str(weight.dtype))
        if key not in cache:
            cache[key] = compute()
        return cache[key]

    def encode_text(self, prompts: PromptBatch, context: torch.Tensor | None = None) -> torch.Tensor:
        """Normalised text features ``(R, P)`` of prompt rows, with ``context`` ``(R, M, D)`` at the soft positions."""
        clip = self.model
        if context is None:
            features = clip.get_text_features(input_ids=prompts.input_ids).pooler_output
        else:
            with self.context_layer.inject(context, prompts.soft_mask):
                features = clip.get_text_features(input_ids=prompts.input_ids).pooler_output
        return F.normalize(features, dim=-1)

    def zero_shot_text_features(self, class_names: list[str], template: str) -> torch.Tensor:
        """``(C, P)`` features of the hand-crafted prompts; the frozen text tower makes them constant."""
        key = ("zero-shot", tuple(class_names), template)

        def compute():
            prompts = self._build(self.active_adapters[0], [[fill_template(template, name)] for name in class_names])
            with torch.no_grad():
                return self.encode_text(prompts)

        return self._cached(key, compute)

    def encode_image(self, pixel_values: torch.Tensor, use_cache: bool = False) -> torch.Tensor:
        """Normalised image features ``(B, P)`` from the frozen image tower (no autograd graph)."""
        if not use_cache:
            with torch.no_grad():
                return F.normalize(self.model.get_image_features(pixel_values=pixel_values).pooler_output, dim=-1)
        cache = self.__dict__.setdefault("_image_cache", {})
        tower = self.model.visual_projection.weight  # features are per device and dtype of the image tower
        keys = [(pixel_digest(image), str(tower.device), str(tower.dtype)) for image in pixel_values]
        missing = [i for i, key in enumerate(keys) if key not in cache]
        if missing:
            for i, features in zip(missing, self.encode_image(pixel_values[missing])):
                cache[keys[i]] = features
        return torch.stack([cache[key] for key in keys])

    # --------------------------------------------------------------------------------------------------- forward
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        image_embeds: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> ClipPromptOutput:
        """Classify images over the configured class names.

        Args:
            pixel_values: ``(B, 3, S, S)``; or give ``image_embeds`` ``(B, P)`` (normalised) instead.
            labels: ``(B,)`` class indices; adds the loss.
        """
        if image_embeds is not None and self.prompts_image_tower and self.active_adapter_in_use() is not None:
            raise ValueError(
                f"{type(self).__name__} prompts the image tower: pass `pixel_values`, not precomputed `image_embeds`."
            )
        if kwargs:
            raise TypeError(f"Unexpected arguments {sorted(kwargs)}: pass pixel_values, labels or image_embeds.")
        config = self.peft_config[self.active_adapters[0]]
        if image_embeds is None:
            if pixel_values is None:
                raise ValueError("Give `pixel_values` (B, 3, H, W) or `image_embeds` (B, P).")
            image_embeds = self.encode_image(pixel_values, use_cache=config.cache_image_features)
        return self._classify(ImageBatch(image_embeds, labels, pixel_values))

    def _classify(self, batch: ImageBatch) -> ClipPromptOutput:
        """Logits of ``batch`` over the class prompts of the active adapter (zero-shot when disabled), the loss
        (cross-entropy and the method's :meth:`_extra_losses`) when ``batch.labels`` is set, and in eval mode the
        method's :meth:`_inference_logits`."""
        adapter_name = self.active_adapter_in_use()
        config = self.peft_config[self.active_adapters[0]]
        image_embeds, labels = batch.image_embeds, batch.labels
        if adapter_name is None:  # adapters disabled: zero-shot CLIP with the hand-crafted template
            text_embeds = self.zero_shot_text_features(config.class_names, config.template)
        else:
            context = self._prompt_context(adapter_name, batch)
            text_embeds = self._encode_classes(adapter_name, context)
        scale = self.model.logit_scale.exp()
        if text_embeds.ndim == 3:  # (B, C, P): one prompt set per image
            logits = scale * torch.einsum("bp,bcp->bc", image_embeds, text_embeds)
        else:
            logits = scale * image_embeds @ text_embeds.T
        output = ClipPromptOutput(logits=logits, image_embeds=image_embeds, text_embeds=text_embeds)
        if labels is not None:
            terms = {"classification": (1.0, F.cross_entropy(logits, labels))}
            if adapter_name is not None:
                terms.update(self._extra_losses(adapter_name, output, batch))
            output.loss = sum(weight * value for weight, value in terms.values())
            output.loss_terms = {name: value for name, (_, value) in terms.items()}
        if adapter_name is not None and not self.training:
            output.logits = self._inference_logits(adapter_name, output, batch)
        return output

    def _encode_classes(
        self, adapter_name: str, context: torch.Tensor, max_rows_per_call: int | None = None
    ) -> torch.Tensor:
        """Text features of the class prompts for a ``(C, M, D)`` or per-image ``(B, C, M, D)`` context.

        A per-image context makes ``B x C`` prompt rows (row ``b * C + c``). They are encoded in chunks of at most
        ``max_rows_per_call`` rows (``None``: one call), never one image at a time; each chunk is cut to its own
        longest EOS (same features, the encoder is causal).
        """
        prompts = self.prompts(adapter_name)
        if context.ndim == 3:
            return self.encode_text(prompts, context)
        batch, num_classes = context.shape[:2]
        rows = batch * num_classes
        chunk = max_rows_per_call or rows
        flat = context.flatten(0, 1)  # (B * C, M, D)
        features = []
        for start in range(0, rows, chunk):
            classes = torch.arange(start, min(start + chunk, rows), device=prompts.input_ids.device) % num_classes
            length = int(prompts.eos_positions[classes].max()) + 1
            ids, soft = prompts.input_ids[classes, :length], prompts.soft_mask[classes, :length]
            part = PromptBatch(ids, soft, prompts.eos_positions[classes])
            features.append(self.encode_text(part, flat[start : start + chunk]))
        return torch.cat(features).view(batch, num_classes, -1)

    # ------------------------------------------------------------------------------------------ interpretation
    @torch.no_grad()
    def decode_context(self, adapter_name: str | None = None, candidate_ids: torch.Tensor | None = None) -> ContextDecoding:
        """Nearest-token decoding of the (shared) context: for each vector the closest token embedding (Euclidean).

        Args:
            candidate_ids: restrict decoding to these token ids (e.g. :func:`readable_token_ids`); default: all.
        """
        adapter_name = adapter_name or self.active_adapters[0]
        context = self.context_layer.context[adapter_name]
        if context.ndim != 2:
            raise ValueError("decode_context reads a shared context; this adapter has a class-specific one.")
        table = self.context_layer.weight.float()
        ids = torch.arange(len(table), device=table.device) if candidate_ids is None else candidate_ids.to(table.device)
        distances = torch.cdist(context.float(), table[ids])  # (M, V')
        nearest = ids[distances.argmin(dim=-1)]
        return self._decoding(adapter_name, context, nearest)

    def word_vocabulary(self, adapter_name: str | None = None) -> torch.Tensor:
        """Ids of every whole-word alphabetic token, short and common words ("a", "of") included: the
        vocabulary of honest readable decoding (an unchanged ``"a photo of a"`` context reads as itself)."""
        tokenizer = self.tokenizer(adapter_name)
        device = self.context_layer.weight.device
        return self._cached(("word vocabulary", id(tokenizer)), lambda: word_token_ids(tokenizer).to(device))

    @torch.no_grad()
    def prompt_explanation(self, adapter_name: str | None = None) -> PromptExplanation:
        """The learnt context read as words: the nearest whole words beside the nearest tokens of the whole
        vocabulary (a class-specific context: one readable prompt per class)."""
        adapter_name = adapter_name or self.active_adapters[0]
        if self.context_layer.context[adapter_name].ndim == 3:
            return PromptExplanation(class_prompts=self.class_prompt_lines(adapter_name))
        readable = self.decode_context(adapter_name, candidate_ids=self.word_vocabulary(adapter_name))
        nearest = self.decode_context(adapter_name)
        return PromptExplanation(
            readable=dataclasses.replace(readable, how="nearest whole words"),
            nearest=dataclasses.replace(nearest, how="nearest tokens of the whole vocabulary"),
        )

    @torch.no_grad()
    def class_prompt_lines(self, adapter_name: str) -> list[str]:
        """One ``"<class>: <words> <class>."`` line per class of a class-specific ``(C, M, D)`` context."""
        context = self.context_layer.context[adapter_name].float()  # (C, M, D)
        table = self.context_layer.weight.float()
        candidates = self.word_vocabulary(adapter_name)
        nearest = candidates[torch.cdist(context, table[candidates][None]).argmin(dim=-1)]  # (C, M)
        tokenizer = self.tokenizer(adapter_name)
        names = self.peft_config[adapter_name].class_names
        return [f"{name}: {' '.join(token_words(tokenizer, ids.tolist()))} {name}." for name, ids in zip(names, nearest)]

    @torch.no_grad()
    def explain(self, pixel_values: torch.Tensor, adapter_name: str | None = None) -> Explanation:
        """The predictions on ``pixel_values`` ``(B, 3, S, S)`` and the learnt prompt read as words."""
        adapter_name = self._explained_adapter(adapter_name)
        logits = self(pixel_values=pixel_values).logits
        return Explanation(
            logits=logits, predictions=logits.argmax(dim=-1), prompt=self.prompt_explanation(adapter_name)
        )

    def _explained_adapter(self, adapter_name: str | None) -> str:
        """The adapter an explanation describes: the active one. Another name is refused, since the predictions
        come from the forward pass, which runs the active adapter."""
        active = self.active_adapters[0]
        if adapter_name is not None and adapter_name != active:
            raise ValueError(f"explain(adapter_name={adapter_name!r}): the predictions come from the active adapter "
                             f"{active!r}; call `set_adapter({adapter_name!r})` first to explain {adapter_name!r}.")  # fmt: skip
        return active

    def _decoding(self, adapter_name: str, context: torch.Tensor, token_ids: torch.Tensor) -> ContextDecoding:
        embeddings = self.context_layer.weight[token_ids].float()
        words = token_words(self.tokenizer(adapter_name), token_ids.tolist())
        return ContextDecoding(
            tokens=words,
            token_ids=token_ids,
            distances=(context.float() - embeddings).norm(dim=-1),
            similarities=F.cosine_similarity(context.float(), embeddings, dim=-1),
            prompt=" ".join(words) + " {}.",
        )

    def readable_vocabulary(self, adapter_name: str | None = None, exclude_words=()) -> torch.Tensor:
        """Ids of readable whole-word tokens (see :mod:`.vocabulary`)."""
        return readable_token_ids(self.tokenizer(adapter_name), exclude_words=exclude_words)
