"""Configuration of DualViewMI: soft and hand-crafted prompts as two views tied by mutual information."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from ..clip_prompt.config import ClipPromptConfig

MI_ESTIMATORS = ("infonce", "bilinear_critic")
AUGMENTATIONS = ("prompt_mixup", "feature_mixup", "none")
INFERENCE_RULES = ("soft", "late_fusion", "average")


@dataclass
class DualViewMIConfig(ClipPromptConfig):
    """Configuration of :class:`~peft_interp.DualViewMIModel` (Zhang, "Generalizable Prompt Tuning for
    Vision-Language Models", arXiv 2410.03189).

    The soft prompt ``s_c = g([SOS] v_1..v_M <class>.)`` and the hand-crafted prompt ``h_c = g(template(class))``
    are two views of each class; training maximises their mutual information (plus cross-entropy), and a
    class-wise augmentation from the image side enriches the soft view. Only the paper's abstract could be read;
    every choice below is an explicit field (``shared/specs/dualview_mi.md`` lists the alternatives).

    Loss: ``CE + mi_weight * L_mi + augmentation_weight * L_aug``.

    Args:
        class_names, template, num_context_tokens, context_init, cache_image_features, tokenizer_name_or_path: see
            :class:`~peft_interp.tuners.clip_prompt.ClipPromptConfig` (defaults: 4 vectors from "a photo of a").
        templates (`list[str]`, *optional*): Hand-crafted view as the mean of several templates (each with one
            ``{}``); ``None`` uses ``template`` alone. Computed once (the text tower is frozen).
        mi_estimator (`str`): ``"infonce"`` (default): symmetric InfoNCE between the two views over the classes,
            ``I(S; H) >= log C - L_mi``; ``"bilinear_critic"``: the same with a learnt bilinear critic
            ``s^T W h / tau`` (W starts at the identity), closer to the paper's learnable estimator.
        mi_temperature (`float`): ``tau`` of the estimator; 0.07.
        mi_weight (`float`): 1.0.
        augmentation (`str`): class-wise visual augmentation. ``"prompt_mixup"`` (default): each sample's soft
            prompt of its own class mixed with its image feature, ``t = norm(lam s_y + (1 - lam) f(x))``, must still
            pick class ``y`` in the hand-crafted view; ``"feature_mixup"``: image features mixed with another image
            of the same class, classified by the soft view; ``"none"``. Only samples of one class are ever mixed.
        augmentation_weight (`float`): 0.5.
        mixup_alpha (`float`): ``lam ~ Beta(alpha, alpha)``, then ``lam = max(lam, 1 - lam)``; 1.0.
        inference (`str`): how eval-mode logits are made: ``"soft"`` (default) from the soft view only;
            ``"late_fusion"``: ``fusion_weight * soft + (1 - fusion_weight) * hand-crafted`` logits;
            ``"average"``: with the class features ``norm(s_c + h_c)``.
        fusion_weight (`float`): weight of the soft view in late fusion; 0.5.
    """

    method_name = "dualview_mi"

    templates: Optional[list[str]] = None
    mi_estimator: Literal["infonce", "bilinear_critic"] = "infonce"
    mi_temperature: float = 0.07
    mi_weight: float = 1.0
    augmentation: Literal["prompt_mixup", "feature_mixup", "none"] = "prompt_mixup"
    augmentation_weight: float = 0.5
    mixup_alpha: float = 1.0
    inference: Literal["soft", "late_fusion", "average"] = "soft"
    fusion_weight: float = 0.5
    learning_rate: float = field(default=0.002, metadata={"help": "SGD learning rate (KgCoOp-style protocol)."})

    def __post_init__(self) -> None:
        super().__post_init__()
        for name, value, allowed in (
            ("mi_estimator", self.mi_estimator, MI_ESTIMATORS),
            ("augmentation", self.augmentation, AUGMENTATIONS),
            ("inference", self.inference, INFERENCE_RULES),
        ):
            if value not in allowed:
                raise ValueError(f"`{name}` must be one of {list(allowed)}, got {value!r}.")
        if self.class_specific_context:
            raise ValueError("`class_specific_context` must be False for DualViewMI: novel classes need the context.")
        if self.templates is not None and (not self.templates or any(t.count("{}") != 1 for t in self.templates)):
            raise ValueError(f"`templates` must be a non-empty list of strings with one '{{}}' each, got {self.templates!r}.")
        if self.mi_temperature <= 0 or self.mixup_alpha <= 0:
            raise ValueError("`mi_temperature` and `mixup_alpha` must be > 0.")
        if not 0 <= self.fusion_weight <= 1:
            raise ValueError(f"`fusion_weight` must be in [0, 1], got {self.fusion_weight}.")
        if self.mi_weight < 0 or self.augmentation_weight < 0:
            raise ValueError("`mi_weight` and `augmentation_weight` must be >= 0.")

    @property
    def hand_crafted_templates(self) -> list[str]:
        return list(self.templates) if self.templates else [self.template]
