"""Fields shared by every CLIP text-prompt method (CoOp, IPL, IntCoOp, DualViewMI)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from peft.config import PeftConfig

from ...registry import INTERP_TASK_TYPE, peft_type_for
from ...validation import check_class_names, check_config_values


@dataclass
class ClipPromptConfig(PeftConfig):
    """Base config of tuners that learn context vectors in front of CLIP's class-name tokens.

    The prompt of class ``c`` is ``[SOS] v_1 .. v_M <class name tokens> . [EOS]``: the ``M`` context vectors
    ``v`` replace token embeddings, everything else is CLIP's own. Class names and the hand-crafted template are
    saved with the adapter.

    Args:
        class_names (`list[str]`): The classes the logits are over, in label order.
        template (`str`): Hand-crafted prompt with one ``{}`` for the class name (zero-shot CLIP; what
            ``disable_adapter()`` scores with). Default ``"a photo of a {}."``.
        num_context_tokens (`int`): ``M``, the number of learnt context vectors.
        context_init (`str`, *optional*): Initialise the context from the token embeddings of these words (must
            tokenise to exactly ``num_context_tokens`` tokens); ``None`` draws them from N(0, 0.02).
        class_specific_context (`bool`): One context per class (CoOp's CSC) instead of one shared context. Such a
            context cannot be moved to other classes with ``set_class_names``.
        cache_image_features (`bool`): Reuse the image features of images seen before (keyed by their pixels and by
            the image tower's device and dtype) when the image tower is frozen and unprompted. Opt-in: with random
            augmentation every view is new, so leave it off there.
        tokenizer_name_or_path (`str`, *optional*): CLIP tokenizer; ``None`` uses OpenAI's BPE vocabulary shipped
            with peft-interp (identical to ``openai/clip-vit-base-patch16``'s).
        target_modules (`list[str]`): Filled in by the tuner: the wrapped module,
            ``text_model.embeddings.token_embedding``. Not a setting.
        base_model_signature (`dict`): Filled in by the tuner (model type, widths, depths, vocabulary); loading the
            adapter on a different base model fails with a message naming both. Not a setting.
    """

    method_name = ""  # set by subclasses: the registered method name

    class_names: Optional[list[str]] = field(default=None, metadata={"help": "Class names, in label order."})
    template: str = field(default="a photo of a {}.", metadata={"help": "Hand-crafted prompt template."})
    num_context_tokens: int = field(default=4, metadata={"help": "Number of learnt context vectors."})
    context_init: Optional[str] = field(default="a photo of a", metadata={"help": "Words to initialise from."})
    class_specific_context: bool = field(default=False, metadata={"help": "One context per class (CSC)."})
    cache_image_features: bool = field(default=False, metadata={"help": "Reuse frozen image features."})
    tokenizer_name_or_path: Optional[str] = field(default=None, metadata={"help": "None = shipped CLIP BPE."})
    target_modules: Optional[list[str]] = field(default=None, metadata={"help": "Set by the tuner."})
    base_model_signature: Optional[dict] = field(default=None, metadata={"help": "Set by the tuner."})

    def __post_init__(self) -> None:
        self.peft_type = peft_type_for(self.method_name)
        self.task_type = INTERP_TASK_TYPE
        super().__post_init__()
        check_config_values(self)
        self.class_names = validated_class_names(self.class_names)
        if self.template.count("{}") != 1:
            raise ValueError(f"`template` must contain exactly one '{{}}' for the class name, got {self.template!r}.")
        if not isinstance(self.num_context_tokens, int) or self.num_context_tokens < 1:
            raise ValueError(f"`num_context_tokens` must be a positive int, got {self.num_context_tokens!r}.")


def validated_class_names(class_names) -> list[str]:
    if not class_names or isinstance(class_names, str) or not all(isinstance(n, str) and n.strip() for n in class_names):
        raise ValueError(f"`class_names` must be a non-empty list of non-empty strings, got {class_names!r}.")
    check_class_names(class_names, "`class_names`")
    return list(class_names)
