"""Fields and checks shared by the visual prompt tuners' configs (VPT-deep, IVPT)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional, Union

from peft.config import PeftConfig

from ...backbones import VisionLayout
from ...registry import INTERP_TASK_TYPE, peft_type_for
from ...validation import check_class_names, check_config_values


@dataclass
class VisualPromptConfig(PeftConfig):
    """Base of the configs of tuners that prompt the blocks of a ViT and classify its output.

    Args:
        num_classes (`int`): Number of classes of the classification head.
        target_modules (`list[str]` or `str`, *optional*): Transformer blocks that receive prompt tokens, as
            module names (e.g. ``["encoder.layer.10", "encoder.layer.11"]``) or one regex matched against the block
            names. ``None`` (default) prompts the last ``num_prompted_layers`` blocks. Only blocks may be named.
        image_size (`int`, *optional*): Input resolution the adapter is built for (spatial biases and token shifts
            depend on it). ``None`` takes the base model config's ``image_size``.
        train_token_embeddings (`bool`): Learn a shift of the CLS token, register tokens and position embeddings
            (stored in the adapter; the base weights stay frozen).
        class_names (`list[str]`, *optional*): Names of the ``num_classes`` classes, for explanations and model cards.
        concept_names (`list[str]`, *optional*): Names of the learnt concepts, once a person has looked at them.
        base_model_signature (`dict`): Filled in by the tuner (model type, widths, depths); loading the adapter on a
            different base model fails with a message naming both. Not a setting.
    """

    method_name = ""  # set by subclasses: the registered method name, e.g. "ivpt"

    num_classes: Optional[int] = field(default=None, metadata={"help": "Number of classes."})
    target_modules: Optional[Union[list[str], str]] = field(
        default=None, metadata={"help": "Blocks to prompt (names or a regex); None = the last blocks."}
    )
    image_size: Optional[int] = field(default=None, metadata={"help": "Input size; None = base config image_size."})
    train_token_embeddings: bool = field(default=False, metadata={"help": "Learn CLS/register/position shifts."})
    class_names: Optional[list[str]] = field(default=None, metadata={"help": "Class names, for explanations."})
    concept_names: Optional[list[str]] = field(default=None, metadata={"help": "Concept names, for explanations."})
    base_model_signature: Optional[dict] = field(default=None, metadata={"help": "Set by the tuner."})

    def __post_init__(self) -> None:
        self.peft_type = peft_type_for(self.method_name)
        self.task_type = INTERP_TASK_TYPE
        super().__post_init__()
        check_config_values(self)
        if not isinstance(self.num_classes, int) or isinstance(self.num_classes, bool) or self.num_classes < 1:
            raise ValueError(f"`num_classes` must be a positive int, got {self.num_classes!r}.")
        if self.image_size is not None and (not isinstance(self.image_size, int) or self.image_size < 1):
            raise ValueError(f"`image_size` must be a positive int or None, got {self.image_size!r}.")
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise ValueError(
                f"`class_names` has {len(self.class_names)} names but `num_classes` is {self.num_classes}."
            )
        check_class_names(self.class_names, "`class_names`")

    def _required_num_blocks(self) -> Optional[int]:
        """How many blocks this config must prompt; None = any number (all blocks when ``target_modules`` is None)."""
        raise NotImplementedError

    def _num_blocks_field(self) -> str:
        """The field that sets the number of prompted blocks, for error messages."""
        raise NotImplementedError

    def resolved_image_size(self, layout: VisionLayout) -> int:
        """The input size for ``layout``; raises if the patch size does not divide it."""
        size = self.image_size or layout.image_size
        if size % layout.patch_size:
            raise ValueError(
                f"`image_size`={size} is not divisible by the model's patch size {layout.patch_size}: "
                f"use a multiple of {layout.patch_size}, e.g. {size - size % layout.patch_size}."
            )
        return size

    def resolve_blocks(self, layout: VisionLayout) -> list[str]:
        """Names of the blocks to prompt, in depth order; raises a ValueError naming the bad field."""
        allowed = layout.block_names
        required = self._required_num_blocks()
        if required is not None and required > layout.num_layers:
            raise ValueError(
                f"{type(self).__name__} prompts {required} blocks but the model has only {layout.num_layers}: "
                f"{self._num_blocks_field()} must ask for at most {layout.num_layers} prompted blocks."
            )
        if self.target_modules is None:
            return allowed[layout.num_layers - (layout.num_layers if required is None else required) :]
        if isinstance(self.target_modules, str):
            blocks = [name for name in allowed if re.fullmatch(self.target_modules, name)]
            unknown = [] if blocks else [self.target_modules]
        else:
            blocks = [name for name in allowed if name in set(self.target_modules)]
            unknown = [name for name in self.target_modules if name not in allowed]
        if unknown:
            raise ValueError(
                f"`target_modules` names unknown modules {unknown}: allowed values are the transformer blocks "
                f"{allowed[0]!r} ... {allowed[-1]!r}."
            )
        if required is not None and len(blocks) != required:
            raise ValueError(
                f"`target_modules` selects {len(blocks)} blocks but {self._num_blocks_field()} asks for {required}."
            )
        return blocks
