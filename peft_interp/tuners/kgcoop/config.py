"""Configuration of KgCoOp, knowledge-guided context optimisation for CLIP."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from ..clip_prompt.config import ClipPromptConfig

KNOWLEDGE_DISTANCES = ("squared_l2", "cosine")


@dataclass
class KgCoOpConfig(ClipPromptConfig):
    """Configuration of :class:`~peft_interp.KgCoOpModel` (Yao et al., "Visual-Language Prompt Tuning with
    Knowledge-guided Context Optimization", CVPR 2023; official code github.com/htyao89/KgCoOp).

    CoOp's prompt ``[SOS] v_1 .. v_M <class>. [EOS]``, trained with

        ``L = L_ce + lambda * L_kg``,   ``L_kg = 1/C sum_c || w_c - w_c^clip ||_2^2``

    where ``w_c`` is the normalised text feature of the learnt prompt of class ``c`` and ``w_c^clip`` that of the
    hand-crafted prompt (``template``, zero-shot CLIP; the paper uses CoOp's per-dataset templates, e.g.
    ``"a photo of a {}, a type of pet."`` for OxfordPets).

    Defaults are the paper's: ``M = 4`` from ``"a photo of a"``, ``lambda = 8``. The official trainer computes
    ``1 - mean_c cos(w_c, w_c^clip)`` instead, which for unit vectors is exactly half the squared distance
    (``knowledge_distance="cosine"``; ``lambda = 8`` there equals ``lambda = 4`` here).
    Training in the paper: SGD, lr 0.002, cosine, 1 warm-up epoch at 1e-5, batch 128, 100 epochs.

    Args:
        class_names, template, num_context_tokens, context_init, class_specific_context, cache_image_features,
        tokenizer_name_or_path: see :class:`~peft_interp.tuners.clip_prompt.ClipPromptConfig`.
        knowledge_weight (`float`): ``lambda``; 8.0.
        knowledge_distance (`str`): ``"squared_l2"`` (the paper's ``L_kg``) or ``"cosine"`` (the official code's
            ``1 - mean cos``).
        learning_rate (`float`): 0.002, the paper's SGD learning rate.
    """

    method_name = "kgcoop"

    num_context_tokens: int = field(default=4, metadata={"help": "M, the number of context vectors (paper: 4)."})
    context_init: Optional[str] = field(default="a photo of a", metadata={"help": "Initial words, or None."})
    knowledge_weight: float = field(default=8.0, metadata={"help": "lambda of L_kg (paper: 8)."})
    knowledge_distance: Literal["squared_l2", "cosine"] = field(
        default="squared_l2", metadata={"help": "squared_l2 (paper) | cosine (official code)."}
    )
    learning_rate: float = field(default=0.002, metadata={"help": "SGD learning rate of the paper."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.knowledge_distance not in KNOWLEDGE_DISTANCES:
            raise ValueError(
                f"`knowledge_distance` must be one of {list(KNOWLEDGE_DISTANCES)}, got {self.knowledge_distance!r}."
            )
        if not isinstance(self.knowledge_weight, (int, float)) or self.knowledge_weight < 0:
            raise ValueError(f"`knowledge_weight` must be a number >= 0, got {self.knowledge_weight!r}.")
