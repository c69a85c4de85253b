"""Configuration of IntCoOp, attribute-aware and instance-conditioned CLIP prompts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from ..clip_prompt.config import ClipPromptConfig

CONDITIONINGS = ("residual", "replace")
ATTENTION_KEYS = ("tokens", "pooled")
ATTRIBUTE_EXTRACTORS = ("mlp", "linear")
ATTRIBUTE_SLOTS = ("predicted", "label")
ATTRIBUTE_LOSSES = ("mse", "cosine", "l1")
REGULARIZATION_PROMPTS = ("attribute", "plain")
REGULARIZATION_DISTANCES = ("squared_l2", "cosine")


@dataclass
class IntCoOpConfig(ClipPromptConfig):
    """Configuration of :class:`~peft_interp.IntCoOpModel` (Ghosal et al., "IntCoOp: Interpretability-Aware
    Vision-Language Prompt Tuning", EMNLP 2024).

    The prompt of class ``c`` for image ``x`` is ``[SOS] v_1(x) .. v_M(x) A(x) <class name>. [EOS]``:

    * ``v_i(x)``: the ``M`` shared context vectors, each conditioned on the image by multi-head attention over the
      image's features (queries: the context, keys / values: the image tokens);
    * ``A(x)``: an *attribute embedding* predicted from the image (e.g. close to the token "green" for a green tree
      frog), trained toward the frozen CLIP token embedding of an attribute word labelled offline (BLIP-2, a label
      file, ground truth or zero-shot CLIP, see :mod:`peft_interp.tuners.intcoop.attributes`).

    Loss: ``L_CE + attribute_loss_weight * L_attr + regularization_weight * L_reg``, ``L_reg`` keeping the learnt
    prompts' text features close to hand-crafted ones (KgCoOp-style). Only the paper's abstract (arXiv 2406.13683)
    and public summaries of it could be read, and the official code (Soumya1612-Rasha/IntCoOp) could not: every
    choice the paper leaves open is a field below, and the defaults are our reading of the abstract.

    Args:
        class_names, template, num_context_tokens, context_init, tokenizer_name_or_path: see
            :class:`~peft_interp.tuners.clip_prompt.ClipPromptConfig`. ``M = 4`` from ``"a photo of a"``. The context
            must be shared (``class_specific_context=False``); ``template`` is also the hand-crafted prompt of
            ``L_reg`` (the attribute variant fills ``{}`` with ``"{attribute} {class name}"``).
        visual_prompt_depth (`int`): Deep visual prompts (VPT-deep) in the first this-many vision blocks, enriching
            the image tokens the context attends to and the feature ``A`` reads; 9 (as MaPLe / PromptSRC). 0 keeps
            the image tower frozen and unprompted (image features then need no autograd).
        visual_prompt_length (`int`): Prompt tokens per prompted block (new ones at every block); 4.
        visual_prompt_init_std (`float`): Their N(0, std) initialisation; 0.02.
        num_attention_heads (`int`): Heads of the context-over-image attention; must divide the text width. 8.
        attention_keys (`str`): What the context attends to: ``"tokens"`` (CLS + patch tokens of the vision tower
            after ``post_layernorm`` and ``visual_projection``) or ``"pooled"`` (the single projected image feature:
            attention over one key reduces to a CoCoOp-like linear map of it).
        conditioning (`str`): ``"residual"`` (``v_i + MHA_i``) or ``"replace"`` (``MHA_i`` alone).
        attribute_extractor (`str`): ``A`` on the projected pooled image feature (before L2 normalisation):
            ``"mlp"`` (Linear-GELU-Linear) or ``"linear"``.
        attribute_hidden_size (`int`, *optional*): Hidden width of the MLP; ``None`` = the text width (512).
        attribute_slot_in_training (`str`): What fills the attribute slot in training: ``"predicted"`` (``A(x)``,
            as at test time) or ``"label"`` (teacher forcing with the label's embedding where the image has one).
        classification_trains_attribute (`bool`): Let the cross-entropy gradient reach ``A``; ``False`` trains ``A``
            by ``L_attr`` only.
        attribute_loss (`str`): Distance of ``L_attr`` between ``A(x)`` and the label's token embedding: ``"mse"``
            (mean over dimensions), ``"cosine"`` (``1 - cos``) or ``"l1"``. A word split into several BPE tokens is
            represented by the mean of their embeddings.
        attribute_loss_weight (`float`): ``lambda1``; 1.0.
        regularization_weight (`float`): ``lambda2``; 8.0 (KgCoOp's weight).
        regularization_prompt (`str`): Hand-crafted prompt of ``L_reg``: ``"attribute"`` (the template with the
            image's own attribute, the plain template where it has none) or ``"plain"``.
        regularization_distance (`str`): ``"squared_l2"`` between normalised features, or ``"cosine"``.
        max_prompts_per_text_call (`int`, *optional*): Memory budget of the text encoder: the ``B x C`` prompts of
            a batch are encoded in chunks of at most this many rows (each cut to its own longest EOS); ``None``
            encodes them in one call. 256.
        checkpoint_text_chunks (`bool`): Recompute each chunk's activations in the backward pass instead of
            keeping them (training memory bounded by one chunk instead of ``B x C`` prompts, ~30% more compute).
        explain_top_k (`int`): Words :meth:`~peft_interp.IntCoOpModel.explain` returns per image. 5.
        learning_rate (`float`): 0.0035 (MaPLe-like SGD, our guess; the paper's value is unverified).
    """

    method_name = "intcoop"

    num_context_tokens: int = field(default=4, metadata={"help": "M, the number of context vectors."})
    context_init: Optional[str] = field(default="a photo of a", metadata={"help": "Initial words, or None."})
    visual_prompt_depth: int = field(default=9, metadata={"help": "Vision blocks with deep prompts; 0 = none."})
    visual_prompt_length: int = field(default=4, metadata={"help": "Prompt tokens per prompted vision block."})
    visual_prompt_init_std: float = field(default=0.02, metadata={"help": "Init std of the visual prompts."})
    num_attention_heads: int = field(default=8, metadata={"help": "Heads of the context-over-image attention."})
    attention_keys: Literal["tokens", "pooled"] = field(default="tokens", metadata={"help": "tokens | pooled."})
    conditioning: Literal["residual", "replace"] = field(default="residual", metadata={"help": "residual | replace."})
    attribute_extractor: Literal["mlp", "linear"] = field(default="mlp", metadata={"help": "mlp | linear."})
    attribute_hidden_size: Optional[int] = field(default=None, metadata={"help": "MLP width; None = text width."})
    attribute_slot_in_training: Literal["predicted", "label"] = field(
        default="predicted", metadata={"help": "predicted | label (teacher forcing)."}
    )
    classification_trains_attribute: bool = field(default=True, metadata={"help": "CE gradient reaches A."})
    attribute_loss: Literal["mse", "cosine", "l1"] = field(default="mse", metadata={"help": "mse | cosine | l1."})
    attribute_loss_weight: float = field(default=1.0, metadata={"help": "lambda1."})
    regularization_weight: float = field(default=8.0, metadata={"help": "lambda2 (KgCoOp: 8)."})
    regularization_prompt: Literal["attribute", "plain"] = field(
        default="attribute", metadata={"help": "attribute | plain."}
    )
    regularization_distance: Literal["squared_l2", "cosine"] = field(
        default="squared_l2", metadata={"help": "squared_l2 | cosine."}
    )
    max_prompts_per_text_call: Optional[int] = field(default=256, metadata={"help": "Chunk size of B x C prompts."})
    checkpoint_text_chunks: bool = field(default=True, metadata={"help": "Activation checkpointing per chunk."})
    explain_top_k: int = field(default=5, metadata={"help": "Attribute words returned by explain()."})
    learning_rate: float = field(default=0.0035, metadata={"help": "SGD learning rate (unverified)."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.class_specific_context:
            raise ValueError("`class_specific_context` must be False for IntCoOp: one shared context is conditioned.")
        if self.cache_image_features:
            raise ValueError(
                "`cache_image_features` must be False for IntCoOp: it reads every image token (and, with visual "
                "prompts, trains the image tower), which the pooled-feature cache does not allow."
            )
        choices = {
            "attention_keys": ATTENTION_KEYS,
            "conditioning": CONDITIONINGS,
            "attribute_extractor": ATTRIBUTE_EXTRACTORS,
            "attribute_slot_in_training": ATTRIBUTE_SLOTS,
            "attribute_loss": ATTRIBUTE_LOSSES,
            "regularization_prompt": REGULARIZATION_PROMPTS,
            "regularization_distance": REGULARIZATION_DISTANCES,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"`{name}` must be one of {list(allowed)}, got {getattr(self, name)!r}.")
        if not isinstance(self.visual_prompt_depth, int) or self.visual_prompt_depth < 0:
            raise ValueError(f"`visual_prompt_depth` must be an int >= 0, got {self.visual_prompt_depth!r}.")
        positive = {
            "num_attention_heads": self.num_attention_heads,
            "explain_top_k": self.explain_top_k,
            "visual_prompt_length": self.visual_prompt_length,
        }
        if self.attribute_hidden_size is not None:
            positive["attribute_hidden_size"] = self.attribute_hidden_size
        if self.max_prompts_per_text_call is not None:
            positive["max_prompts_per_text_call"] = self.max_prompts_per_text_call
        for name, value in positive.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"`{name}` must be a positive int, got {value!r}.")
        for name in ("attribute_loss_weight", "regularization_weight", "visual_prompt_init_std"):
            if getattr(self, name) < 0:
                raise ValueError(f"`{name}` must be >= 0, got {getattr(self, name)!r}.")
