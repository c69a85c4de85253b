"""Configuration of VPT-deep, the visual prompt tuning baseline."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from ..visual.config import VisualPromptConfig


@dataclass
class VPTDeepConfig(VisualPromptConfig):
    """Configuration of :class:`~peft_interp.VPTDeepModel` (Jia et al., "Visual Prompt Tuning", ECCV 2022).

    Every prompted block gets its own ``num_prompt_tokens`` learnt tokens, appended before the block and dropped
    after it; a linear head classifies the normalised CLS token.

    Args:
        num_classes (`int`): Number of classes.
        num_prompt_tokens (`int`): Prompt tokens per prompted block. Default 4, the number of prompt tokens IVPT
            uses per block, so the two are compared at equal prompt length.
        num_prompted_layers (`int`, *optional*): Prompt the last this many blocks. ``None`` (default) prompts every
            block (or exactly the blocks in ``target_modules``), which is what "deep" means in the VPT paper.
        target_modules, image_size, train_token_embeddings: see :class:`VisualPromptConfig`.
    """

    method_name = "vpt_deep"

    num_prompt_tokens: int = field(default=4, metadata={"help": "Prompt tokens per prompted block."})
    num_prompted_layers: Optional[int] = field(default=None, metadata={"help": "Last N blocks; None = all."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.num_prompt_tokens, int) or self.num_prompt_tokens < 1:
            raise ValueError(f"`num_prompt_tokens` must be a positive int, got {self.num_prompt_tokens!r}.")
        if self.num_prompted_layers is not None and (
            not isinstance(self.num_prompted_layers, int) or self.num_prompted_layers < 1
        ):
            raise ValueError(f"`num_prompted_layers` must be a positive int or None, got {self.num_prompted_layers!r}.")

    def _required_num_blocks(self) -> Optional[int]:
        return self.num_prompted_layers

    def _num_blocks_field(self) -> str:
        return f"`num_prompted_layers`={self.num_prompted_layers}"
