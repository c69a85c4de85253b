"""Configuration of CoOp, the context-optimisation baseline for CLIP."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from ..clip_prompt.config import ClipPromptConfig


@dataclass
class CoOpConfig(ClipPromptConfig):
    """Configuration of :class:`~peft_interp.CoOpModel` (Zhou et al., "Learning to Prompt for Vision-Language
    Models", IJCV 2022).

    ``M`` context vectors, shared by all classes (or one set per class), in front of the class name:
    ``[SOS] v_1 .. v_M <class>. [EOS]``, trained with cross-entropy; CLIP stays frozen.

    Defaults are the base-to-novel setting of the CoOp/CoCoOp papers: ``M = 4`` initialised from
    ``"a photo of a"``. The few-shot setting of the CoOp paper is ``num_context_tokens=16, context_init=None``.
    Training in the papers: SGD, lr 0.002, cosine schedule, 1 warm-up epoch at 1e-5, batch 32.

    Args:
        class_names, template, num_context_tokens, context_init, class_specific_context, cache_image_features,
        tokenizer_name_or_path: see :class:`~peft_interp.tuners.clip_prompt.ClipPromptConfig`.
        learning_rate (`float`): 0.002, the papers' SGD learning rate.
    """

    method_name = "coop"

    num_context_tokens: int = field(default=4, metadata={"help": "Number of context vectors (paper: 4 or 16)."})
    context_init: Optional[str] = field(default="a photo of a", metadata={"help": "Initial words, or None."})
    learning_rate: float = field(default=0.002, metadata={"help": "SGD learning rate of the papers."})
