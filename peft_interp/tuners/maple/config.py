"""Configuration of MaPLe, coupled deep vision-language prompts for CLIP."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from ..clip_prompt.config import ClipPromptConfig


def check_deep_prompt_config(config: ClipPromptConfig, method: str) -> None:
    """Shared checks of the deep-prompt methods (MaPLe, PromptSRC)."""
    if config.class_specific_context:
        raise ValueError(f"`class_specific_context` must be False for {method}: its prompts are shared by all classes.")
    if config.cache_image_features:
        raise ValueError(
            f"`cache_image_features` must be False for {method}: its prompts are inside the image tower, so image "
            "features change as they train."
        )


def check_positive_ints(config, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"`{name}` must be a positive int, got {value!r}.")


@dataclass
class MaPLeConfig(ClipPromptConfig):
    """Configuration of :class:`~peft_interp.MaPLeModel` (Khattak et al., "MaPLe: Multi-modal Prompt Learning",
    CVPR 2023; official code github.com/muzairkhattak/multimodal-prompt-learning).

    ``n`` learnt text prompt tokens at the input of the text tower and, in text blocks ``1 .. J - 1``, a fresh set
    of ``n`` deep prompts in their place; the vision tower gets ``n`` prompt tokens at its input and in blocks
    ``1 .. J - 1``, each a *coupling function* (a linear map ``R^D -> R^W``) of the text prompts of the same depth,
    so that both branches learn together. Loss: cross-entropy; CLIP stays frozen.

    Defaults are the paper's: ``J = 9``, ``n = 2``, context initialised from ``"a photo of a"``. As in the
    official code, an initialisation longer than ``n`` tokens keeps its remaining words as fixed text: the prompt
    is ``[SOS] v_1 v_2 of a <class>. [EOS]``, ``v`` starting at the embeddings of ``"a photo"``.
    Training in the paper: SGD, lr 0.0035, cosine, 1 warm-up epoch at 1e-5, batch 4, 5 epochs.

    Args:
        class_names, template, tokenizer_name_or_path: see
            :class:`~peft_interp.tuners.clip_prompt.ClipPromptConfig`.
        num_context_tokens (`int`): ``n``, prompt tokens per depth in each tower; 2.
        context_init (`str`, *optional*): Words whose first ``n`` token embeddings initialise the input context;
            the rest stay in the prompt as fixed words. ``None``: N(0, 0.02), no fixed words.
        prompt_depth (`int`): ``J``, the number of prompted blocks in each tower (1 = input prompts only); 9.
        learning_rate (`float`): 0.0035, the paper's SGD learning rate.
        class_specific_context, cache_image_features: must stay False.
    """

    method_name = "maple"

    num_context_tokens: int = field(default=2, metadata={"help": "n, prompt tokens per depth (paper: 2)."})
    context_init: Optional[str] = field(default="a photo of a", metadata={"help": "Initial words, or None."})
    prompt_depth: int = field(default=9, metadata={"help": "J, prompted blocks per tower (paper: 9)."})
    learning_rate: float = field(default=0.0035, metadata={"help": "SGD learning rate of the paper."})

    def __post_init__(self) -> None:
        super().__post_init__()
        check_deep_prompt_config(self, "MaPLe")
        check_positive_ints(self, ("prompt_depth",))
