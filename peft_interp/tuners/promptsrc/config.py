"""Configuration of PromptSRC, self-regulating deep vision-language prompts for CLIP."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from ..clip_prompt.config import ClipPromptConfig
from ..maple.config import check_deep_prompt_config, check_positive_ints

# The 60 hand-crafted ImageNet templates of OpenAI CLIP's prompt-engineering notebook
# (github.com/openai/CLIP, notebooks/Prompt_Engineering_for_ImageNet.ipynb), which PromptSRC averages into its
# frozen text features for every dataset.
IMAGENET_TEMPLATES = (
    "a photo of a {}.", "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.",
    "a photo of the hard to see {}.", "a low resolution photo of the {}.", "a rendering of a {}.", "graffiti of a {}.",
    "a bad photo of the {}.", "a cropped photo of the {}.", "a tattoo of a {}.", "the embroidered {}.",
    "a photo of a hard to see {}.", "a bright photo of a {}.", "a photo of a clean {}.", "a photo of a dirty {}.",
    "a dark photo of the {}.", "a drawing of a {}.", "a photo of my {}.", "the plastic {}.", "a photo of the cool {}.",
    "a close-up photo of a {}.", "a black and white photo of the {}.", "a painting of the {}.", "a painting of a {}.",
    "a pixelated photo of the {}.", "a sculpture of the {}.", "a bright photo of the {}.", "a cropped photo of a {}.",
    "a plastic {}.", "a photo of the dirty {}.", "a jpeg corrupted photo of a {}.", "a blurry photo of the {}.",
    "a photo of the {}.", "a good photo of the {}.", "a rendering of the {}.", "a {} in a video game.",
    "a photo of one {}.", "a doodle of a {}.", "a close-up photo of the {}.", "the origami {}.",
    "the {} in a video game.", "a sketch of a {}.", "a doodle of the {}.", "a origami {}.",
    "a low resolution photo of a {}.", "the toy {}.", "a rendition of the {}.", "a photo of the clean {}.",
    "a photo of a large {}.", "a rendition of a {}.", "a photo of a nice {}.", "a photo of a weird {}.",
    "a blurry photo of a {}.", "a cartoon {}.", "art of a {}.", "a sketch of the {}.", "a embroidered {}.",
    "a pixelated photo of a {}.", "itap of the {}.",
)  # fmt: skip


@dataclass
class PromptSRCConfig(ClipPromptConfig):
    """Configuration of :class:`~peft_interp.PromptSRCModel` (Khattak et al., "Self-regulating Prompts:
    Foundational Model Adaptation without Forgetting", ICCV 2023; official code github.com/muzairkhattak/PromptSRC).

    Independent deep prompts in both towers (``n_t`` text tokens in the first ``J_t`` text blocks, ``n_v`` vision
    tokens in the first ``J_v`` vision blocks; placed as in MaPLe, but not coupled), trained with

        ``L = L_ce + lambda_1 L_SCL-image + lambda_2 L_SCL-text + L_SCL-logits``

    * ``L_SCL-image = mean |f_p - f|``: L1 between the prompted and the frozen model's normalised image features;
    * ``L_SCL-text = mean |g_p - g|``: L1 between the prompted class features and the frozen model's, ``g`` being
      the mean of the frozen text features over ``teacher_templates`` (normalised after averaging);
    * ``L_SCL-logits = KL(softmax(s f g^T) || softmax(s f_p g_p^T))``, summed and divided by ``B x C`` as in the
      official code;

    and *Gaussian prompt aggregation* (GPA): after epoch ``e`` of ``E`` the prompts are added to a running sum with
    weight ``w_e ∝ N(e; mu, sigma^2)`` (``sum_e w_e = 1``); after the last epoch the prompts become that sum. The
    self-regularisation terms are computed in training mode only (as in the official code).

    Defaults are the paper's base-to-novel setting: ``J_t = J_v = 9``, ``n_t = n_v = 4``, text context from
    ``"a photo of a"``, ``lambda_1 = 10``, ``lambda_2 = 25``, GPA ``mu = 15``, ``sigma = 1``.
    Training in the paper: SGD, lr 0.0025, cosine, 1 warm-up epoch at 1e-5, batch 4, 20 epochs. The official
    configs of the other settings: few-shot, 50 epochs with GPA ``mu = 30, sigma = 30`` (``45, 5`` for Cars,
    Flowers, Aircraft, DTD, EuroSAT); cross-dataset, depth 3 with ``mu = 6, sigma = 10``. GPA needs ``gpa_mean``
    within reach of the run's epochs (set it when training for fewer epochs than the paper).

    Args:
        class_names, template, tokenizer_name_or_path: see
            :class:`~peft_interp.tuners.clip_prompt.ClipPromptConfig`.
        num_context_tokens (`int`): ``n_t``; 4.
        context_init (`str`, *optional*): Words whose first ``n_t`` token embeddings initialise the text context
            (the rest stay as fixed words, see :class:`~peft_interp.MaPLeConfig`); ``None``: N(0, 0.02).
        text_prompt_depth (`int`): ``J_t``; 9.
        vision_prompt_depth (`int`): ``J_v``; 9.
        num_vision_tokens (`int`): ``n_v``; 4.
        image_loss_weight (`float`): ``lambda_1``; 10.
        text_loss_weight (`float`): ``lambda_2``; 25.
        logits_loss_weight (`float`): weight of ``L_SCL-logits``; 1.
        teacher_templates (`list[str]`, *optional*): Hand-crafted templates (one ``{}`` each) averaged into the
            frozen class features ``g``; ``None`` = the 60 ImageNet templates of CLIP.
        gpa_mean, gpa_std (`float`): ``mu`` and ``sigma`` of GPA, in epochs (1-based); 15 and 1.
        learning_rate (`float`): 0.0025, the paper's SGD learning rate.
        class_specific_context, cache_image_features: must stay False.
    """

    method_name = "promptsrc"

    num_context_tokens: int = field(default=4, metadata={"help": "n_t, text prompt tokens per depth (paper: 4)."})
    context_init: Optional[str] = field(default="a photo of a", metadata={"help": "Initial words, or None."})
    text_prompt_depth: int = field(default=9, metadata={"help": "J_t, prompted text blocks (paper: 9)."})
    vision_prompt_depth: int = field(default=9, metadata={"help": "J_v, prompted vision blocks (paper: 9)."})
    num_vision_tokens: int = field(default=4, metadata={"help": "n_v, vision prompt tokens per depth (paper: 4)."})
    image_loss_weight: float = field(default=10.0, metadata={"help": "lambda_1 (paper: 10)."})
    text_loss_weight: float = field(default=25.0, metadata={"help": "lambda_2 (paper: 25)."})
    logits_loss_weight: float = field(default=1.0, metadata={"help": "Weight of L_SCL-logits (paper: 1)."})
    teacher_templates: Optional[list[str]] = field(default=None, metadata={"help": "None = 60 ImageNet templates."})
    gpa_mean: float = field(default=15.0, metadata={"help": "GPA mean epoch (paper: 15)."})
    gpa_std: float = field(default=1.0, metadata={"help": "GPA std in epochs (paper: 1)."})
    learning_rate: float = field(default=0.0025, metadata={"help": "SGD learning rate of the paper."})

    def __post_init__(self) -> None:
        super().__post_init__()
        check_deep_prompt_config(self, "PromptSRC")
        check_positive_ints(self, ("text_prompt_depth", "vision_prompt_depth", "num_vision_tokens"))
        for name in ("image_loss_weight", "text_loss_weight", "logits_loss_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"`{name}` must be >= 0, got {getattr(self, name)!r}.")
        if not self.gpa_std > 0:
            raise ValueError(f"`gpa_std` must be > 0, got {self.gpa_std!r}.")
        if self.teacher_templates is not None:
            if not self.teacher_templates or any(
                not isinstance(t, str) or t.count("{}") != 1 for t in self.teacher_templates
            ):
                raise ValueError(
                    "`teacher_templates` must be a non-empty list of strings with exactly one '{}' each, got "
                    f"{self.teacher_templates!r}."
                )
            self.teacher_templates = list(self.teacher_templates)
