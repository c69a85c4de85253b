"""Configuration of CoCoOp, conditional (image-dependent) context optimisation for CLIP."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from ..clip_prompt.config import ClipPromptConfig


@dataclass
class CoCoOpConfig(ClipPromptConfig):
    """Configuration of :class:`~peft_interp.CoCoOpModel` (Zhou et al., "Conditional Prompt Learning for
    Vision-Language Models", CVPR 2022; official code github.com/KaiyangZhou/CoOp, ``trainers/cocoop.py``).

    The prompt of class ``c`` for image ``x`` is ``[SOS] v_1 + pi(x) .. v_M + pi(x) <class>. [EOS]``: a *meta-net*
    ``pi`` (Linear - ReLU - Linear, hidden width ``P / meta_net_reduction``) maps the normalised image feature to
    one bias vector added to every context vector. Loss: cross-entropy; CLIP stays frozen.

    Defaults are the paper's base-to-novel setting: ``M = 4`` from ``"a photo of a"``, reduction 16 (512 -> 32 ->
    512 for ViT-B/16). Training in the paper: SGD, lr 0.002, cosine, 1 warm-up epoch at 1e-5, batch 1, 10 epochs.

    Args:
        class_names, template, num_context_tokens, context_init, cache_image_features, tokenizer_name_or_path: see
            :class:`~peft_interp.tuners.clip_prompt.ClipPromptConfig`. The context must be shared.
        meta_net_reduction (`int`): ``P / hidden width`` of the meta-net; 16.
        max_prompts_per_text_call (`int`, *optional*): Memory budget of the text encoder: the ``B x C`` prompts of
            a batch are encoded together in chunks of at most this many rows (each cut to its own longest EOS)
            instead of one image at a time; ``None`` encodes them in one call. 1024.
        learning_rate (`float`): 0.002, the paper's SGD learning rate.
    """

    method_name = "cocoop"

    num_context_tokens: int = field(default=4, metadata={"help": "M, the number of context vectors (paper: 4)."})
    context_init: Optional[str] = field(default="a photo of a", metadata={"help": "Initial words, or None."})
    meta_net_reduction: int = field(default=16, metadata={"help": "Meta-net hidden width = P / this (paper: 16)."})
    max_prompts_per_text_call: Optional[int] = field(default=1024, metadata={"help": "Chunk of B x C prompts."})
    learning_rate: float = field(default=0.002, metadata={"help": "SGD learning rate of the paper."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.class_specific_context:
            raise ValueError("`class_specific_context` must be False for CoCoOp: its meta-net shifts one shared context.")
        for name in ("meta_net_reduction", "max_prompts_per_text_call"):
            value = getattr(self, name)
            if value is None and name == "max_prompts_per_text_call":
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"`{name}` must be a positive int, got {value!r}.")
