"""Configuration of DualViewMI: soft and hand-crafted prompts as two views tied by mutual information."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from ..clip_prompt.config import ClipPromptConfig

MI_ESTIMATORS = ("mlp_critic", "infonce", "bilinear_critic")
AUGMENTATIONS = ("visual_mixup", "prompt_mixup", "feature_mixup", "none")
INFERENCE_RULES = ("soft", "late_fusion", "average")


@dataclass
class DualViewMIConfig(ClipPromptConfig):
    """Configuration of :class:`~peft_interp.DualViewMIModel` (Zhang, "Generalizable Prompt Tuning for
    Vision-Language Models", arXiv 2410.03189).

    The soft prompt ``s_c = g([SOS] v_1..v_M <class>.)`` and the hand-crafted prompt ``h_c = g(template(class))``
    are two views of each class; training maximises their mutual information (plus cross-entropy), and a
    class-wise augmentation from the image side enriches the soft view. Only the paper's abstract could be read;
    every choice below is an explicit field (the README lists which remain guesses).

    Loss: ``CE + mi_weight * L_mi + augmentation_weight * L_aug``.

    Args:
        class_names, template, num_context_tokens, context_init, cache_image_features, tokenizer_name_or_path: see
            :class:`~peft_interp.tuners.clip_prompt.ClipPromptConfig` (defaults: 4 vectors from "a photo of a").
        templates (`list[str]`, *optional*): Hand-crafted view as the mean of several templates (each with one
            ``{}``); ``None`` uses ``template`` alone. Computed once (the text tower is frozen).
        mi_estimator (`str`): The learnable MI estimator the paper's summaries describe, as InfoNCE with a critic
            ``T`` trained jointly with the prompt (``I >= log n - L`` for any critic, see
            :mod:`peft_interp.tuners.dualview_mi.layer`). ``"mlp_critic"`` (default):
            ``T(a, b) = a.b / tau + MLP(a, b, a * b)``, the MLP's output layer zero at start;
            ``"bilinear_critic"``: ``T = a^T W b / tau`` (W starts at the identity); ``"infonce"``: the parameter-free
            ``T = a.b / tau`` (our earlier default). The soft and hand-crafted views are scored over the classes
            (symmetric InfoNCE), and with ``visual_mixup`` the same critic scores the augmented image features
            against the soft view.
        critic_hidden_size (`int`): Hidden units of the MLP critic; 256.
        mi_temperature (`float`): ``tau`` of the estimator; 0.07.
        mi_weight (`float`): 1.0.
        augmentation (`str`): class-wise visual augmentation; only samples of one class are ever mixed.
            ``"visual_mixup"`` (default): each image feature mixed with another image of its class,
            ``f~ = norm(lam f_i + (1 - lam) f_j)``, and the MI estimator's critic must match ``f~`` to its class's
            soft prompt among all classes (InfoNCE over classes, ``CE(T(f~, s_c), y)``);
            ``"prompt_mixup"``: the sample's soft prompt mixed with its own image feature,
            ``t = norm(lam s_y + (1 - lam) f(x))``, must pick class ``y`` in the hand-crafted view (cosine / tau);
            ``"feature_mixup"``: ``f~`` classified by the soft view with CLIP's logit scale (no critic); ``"none"``.
        augmentation_weight (`float`): 0.5.
        mixup_alpha (`float`): ``lam ~ Beta(alpha, alpha)``, then ``lam = max(lam, 1 - lam)``; 1.0.
        inference (`str`): how eval-mode logits are made: ``"soft"`` (default) from the soft view only;
            ``"late_fusion"``: ``fusion_weight * soft + (1 - fusion_weight) * hand-crafted`` logits;
            ``"average"``: with the class features ``norm(s_c + h_c)``.
        fusion_weight (`float`): weight of the soft view in late fusion; 0.5.
    """

    method_name = "dualview_mi"

    templates: Optional[list[str]] = None
    mi_estimator: Literal["mlp_critic", "infonce", "bilinear_critic"] = "mlp_critic"
    critic_hidden_size: int = 256
    mi_temperature: float = 0.07
    mi_weight: float = 1.0
    augmentation: Literal["visual_mixup", "prompt_mixup", "feature_mixup", "none"] = "visual_mixup"
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
        if not isinstance(self.critic_hidden_size, int) or self.critic_hidden_size < 1:
            raise ValueError(f"`critic_hidden_size` must be a positive int, got {self.critic_hidden_size!r}.")
        if self.mi_temperature <= 0 or self.mixup_alpha <= 0:
            raise ValueError("`mi_temperature` and `mixup_alpha` must be > 0.")
        if not 0 <= self.fusion_weight <= 1:
            raise ValueError(f"`fusion_weight` must be in [0, 1], got {self.fusion_weight}.")
        if self.mi_weight < 0 or self.augmentation_weight < 0:
            raise ValueError("`mi_weight` and `augmentation_weight` must be >= 0.")

    @property
    def hand_crafted_templates(self) -> list[str]:
        return list(self.templates) if self.templates else [self.template]
