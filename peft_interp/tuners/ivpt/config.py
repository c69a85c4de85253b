"""Configuration of IVPT, Interpretable Visual Prompt Tuning with cross-layer concept prototypes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from ..visual.config import VisualPromptConfig

SPATIAL_BIAS_CHOICES = ("before_softmax", "none")
GROUPING_CHOICES = ("gumbel", "softmax")
EQUIVARIANCE_TRANSFORM_CHOICES = ("per_batch", "per_image")


@dataclass
class IVPTConfig(VisualPromptConfig):
    """Configuration of :class:`~peft_interp.IVPTModel` (Wang et al., "Exploring Interpretability for Visual Prompt
    Tuning with Cross-layer Concepts", ICLR 2026). Defaults are the paper's and its official code's.

    Each prompted block ``q`` has ``K_q = num_prototypes[q]`` concept prototypes (the last one is background); its
    patches are softly assigned to them, features are pooled per region, grouped fine-to-coarse into the ``N`` final
    concepts, and become the block's ``N`` prompt tokens. After the backbone a last level of ``N + 1`` prototypes
    pools the output features per concept and a shared linear head scores every concept; the logits are the mean
    over concepts, so each concept's class scores explain the decision.

    Args:
        num_classes (`int`): Number of classes.
        num_prototypes (`list[int]`): Prototypes per level, background included: one entry per prompted block
            (shallow to deep) and a last entry for the head level. Default ``[17, 14, 11, 8, 5]``: 4 prompted blocks,
            ``N = 4`` final concepts. Counts must not increase with depth, and each level needs >= 2 prototypes.
        target_modules (`list[str]` or `str`, *optional*): Blocks to prompt (``len(num_prototypes) - 1`` of them);
            ``None`` = the last blocks, as in the paper.
        image_size (`int`, *optional*): Input size (the spatial biases are ``(K, h, w)``); ``None`` = model config's.
        train_token_embeddings (`bool`): Train the CLS token, register tokens and position embeddings (as one
            additive shift, see :class:`~peft_interp.tuners.layers.EmbeddingShift`). Default ``True`` like the
            official code, which trains them with the prototypes' learning rate. On HF models CLS token and its
            position embedding are one sum, so a single shift is the faithful version.
        spatial_bias (`str`): ``"before_softmax"`` (default; official code) adds a learnt ``(K, h, w)`` bias to the
            concept logits before the softmax. The paper's text writes the bias after the softmax, which would not
            give a distribution over concepts; ``"none"`` drops it (the ablation without spatial bias).
        grouping (`str`): ``"gumbel"`` (default) groups fine prototypes into final concepts with a soft
            Gumbel-softmax (tau ``gumbel_tau``) during training; ``"softmax"`` uses a plain softmax.
        gumbel_tau (`float`): Gumbel-softmax temperature, default 1.
        gumbel_at_inference (`bool`): The official code also draws Gumbel noise at test time, which makes its
            predictions stochastic. Default ``False``: plain softmax in eval mode, deterministic outputs.
        map_renorm_eps (`float`): Every level's maps are renormalised as ``(A + eps) / sum_k (A + eps)`` before the
            losses, the head and the consistency target (official code: 1e-6). The grouped maps that the consistency
            loss predicts from are built before this step, as in the official code.
        train_prompt_norm (`bool`): The LayerNorm over each block's ``(N, D)`` concept tokens is frozen at identity
            in the official run (its parameters match no optimiser group). Default ``False`` keeps that.
        prototype_init_std (`float`): Prototypes are initialised ``N(0, std)``; default 0.05.
        classification_weight, consistency_weight, presence_weight, background_presence_weight,
        total_variation_weight, pixel_entropy_weight, equivariance_weight, orthogonality_weight (`float`):
            Loss weights, all 1 in the authors' scripts. The total loss is
            ``CE + L_con + mean over levels of (presence + background presence + total variation + pixel entropy
            + equivariance) + orthogonality``, each term times its weight. ``equivariance_weight=0`` skips the
            second forward pass.
        consistency_eps (`float`): eps inside the logs of the cross-layer KL, default 1e-10.
        presence_group_size (`int`, *optional*): The presence loss asks each concept to appear somewhere in a group
            of images: its max runs over consecutive groups of this many images of a batch and the loss is averaged
            over groups. Default 4: the official code computes it on each GPU's 4 images of its batch of 16 (4 GPUs,
            gradients averaged). ``None`` = the whole batch.
        equivariance_transform (`str`): ``"per_batch"`` (default; official code) draws one random transform for the
            whole batch; ``"per_image"`` draws one per image.
        equivariance_rotation (`float`): Max rotation in degrees of the equivariance transform, U(-r, r); 90.
        equivariance_translation (`float`): Max translation as a fraction of the image side; 0.11.
        equivariance_scale (`tuple[float, float]`): Scale range, U(lo, hi); (0.8, 1.4).
        learning_rate (`float`): Learning rate of the head, modulation, prompt and grouping linears (1e-2).
        prototype_learning_rate (`float`): Learning rate of prototypes, spatial biases and token shifts (2e-4).
    """

    method_name = "ivpt"

    num_prototypes: list[int] = field(default_factory=lambda: [17, 14, 11, 8, 5])
    train_token_embeddings: bool = field(default=True, metadata={"help": "Learn CLS/register/position shifts."})
    spatial_bias: Literal["before_softmax", "none"] = "before_softmax"
    grouping: Literal["gumbel", "softmax"] = "gumbel"
    gumbel_tau: float = 1.0
    gumbel_at_inference: bool = False
    map_renorm_eps: float = 1e-6
    train_prompt_norm: bool = False
    prototype_init_std: float = 0.05
    classification_weight: float = 1.0
    consistency_weight: float = 1.0
    presence_weight: float = 1.0
    background_presence_weight: float = 1.0
    total_variation_weight: float = 1.0
    pixel_entropy_weight: float = 1.0
    equivariance_weight: float = 1.0
    orthogonality_weight: float = 1.0
    consistency_eps: float = 1e-10
    presence_group_size: Optional[int] = 4
    equivariance_transform: Literal["per_batch", "per_image"] = "per_batch"
    equivariance_rotation: float = 90.0
    equivariance_translation: float = 0.11
    equivariance_scale: tuple[float, float] = (0.8, 1.4)
    learning_rate: float = 1e-2
    prototype_learning_rate: float = 2e-4

    def __post_init__(self) -> None:
        super().__post_init__()
        counts = self.num_prototypes
        if not isinstance(counts, (list, tuple)) or not counts or not all(isinstance(k, int) for k in counts):
            raise ValueError(f"`num_prototypes` must be a non-empty list of ints, got {counts!r}.")
        self.num_prototypes = list(counts)
        if min(counts) < 2:
            raise ValueError(
                f"`num_prototypes` needs >= 2 prototypes per level (>= 1 foreground + the background), got {counts}."
            )
        if any(deeper > shallower for shallower, deeper in zip(counts, counts[1:])):
            raise ValueError(
                f"`num_prototypes` must not increase from one level to the next (fine-to-coarse grouping), "
                f"got {counts}; e.g. the paper's [17, 14, 11, 8, 5]."
            )
        _check_choice("spatial_bias", self.spatial_bias, SPATIAL_BIAS_CHOICES)
        _check_choice("grouping", self.grouping, GROUPING_CHOICES)
        _check_choice("equivariance_transform", self.equivariance_transform, EQUIVARIANCE_TRANSFORM_CHOICES)
        size = self.presence_group_size
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            raise ValueError(f"`presence_group_size` must be a positive int or None (whole batch), got {size!r}.")
        for name in (
            "classification_weight", "consistency_weight", "presence_weight", "background_presence_weight",
            "total_variation_weight", "pixel_entropy_weight", "equivariance_weight", "orthogonality_weight",
        ):  # fmt: skip
            if getattr(self, name) < 0:
                raise ValueError(f"`{name}` must be >= 0, got {getattr(self, name)}.")
        lo, hi = self.equivariance_scale
        self.equivariance_scale = (float(lo), float(hi))
        if not 0 < lo <= hi:
            raise ValueError(f"`equivariance_scale` must be (lo, hi) with 0 < lo <= hi, got {self.equivariance_scale}.")

    @property
    def num_concepts(self) -> int:
        """``N``, the number of final (foreground) concepts = prompt tokens per prompted block."""
        return self.num_prototypes[-1] - 1

    def _required_num_blocks(self) -> Optional[int]:
        return len(self.num_prototypes) - 1

    def _num_blocks_field(self) -> str:
        return f"`num_prototypes` (one entry per prompted block + 1, got {len(self.num_prototypes)} entries)"


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {list(choices)}, got {value!r}.")
