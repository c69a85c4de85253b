"""PromptSRC's prompts, its self-regularisation terms and Gaussian prompt aggregation.

The prompts live in the shared module dict ``promptsrc_prompts`` of :class:`~peft_interp.PromptSRCModel` and the
running GPA sum in ``promptsrc_gpa`` (both keyed by adapter name, saved with the adapter, so a resumed run
continues the same sum). Shapes: ``D`` text width, ``W`` vision width, ``P`` projection size, ``B`` images,
``C`` classes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class IndependentPrompts(nn.Module):
    """Deep text prompts ``(J_t - 1, n_t, D)`` and vision prompts ``(J_v, n_v, W)``, all from N(0, 0.02) as in the
    official code (the text input context is the token-embedding wrapper's)."""

    def __init__(self, num_text_tokens: int, text_width: int, text_depth: int, num_vision_tokens: int,
                 vision_width: int, vision_depth: int) -> None:  # fmt: skip
        super().__init__()
        self.deep_text = nn.Parameter(torch.randn(text_depth - 1, num_text_tokens, text_width) * 0.02)
        self.vision = nn.Parameter(torch.randn(vision_depth, num_vision_tokens, vision_width) * 0.02)


class GaussianPromptAggregation(nn.Module):
    """The running GPA sum ``sum_{e' <= e} w_e' theta_e'`` of the flattened prompts ``theta`` ``(N,)``, and how
    many epochs it holds."""

    def __init__(self, num_values: int) -> None:
        super().__init__()
        self.register_buffer("running_sum", torch.zeros(num_values))
        self.register_buffer("epochs", torch.zeros((), dtype=torch.long))


def gaussian_weights(num_epochs: int, mean: float, std: float) -> torch.Tensor:
    """``(E,)`` GPA weights ``w_e = N(e; mean, std^2) / sum_e' N(e'; mean, std^2)`` for epochs ``e = 1 .. E``
    (float64, as the official code computes them)."""
    epochs = torch.arange(1, num_epochs + 1, dtype=torch.float64)
    density = torch.exp(-0.5 * ((epochs - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi))
    if density.sum() == 0:
        raise ValueError(
            f"GPA weights underflow: no epoch of 1..{num_epochs} is within reach of `gpa_mean`={mean} "
            f"(`gpa_std`={std}); set `gpa_mean` inside the training epochs."
        )
    return density / density.sum()


def self_regularization_terms(
    image_features: torch.Tensor,
    frozen_image_features: torch.Tensor,
    text_features: torch.Tensor,
    frozen_text_features: torch.Tensor,
    logits: torch.Tensor,
    frozen_logits: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """PromptSRC's unweighted ``L_SCL`` terms.

    Args:
        image_features, frozen_image_features: ``(B, P)`` normalised, prompted and frozen.
        text_features, frozen_text_features: ``(C, P)`` normalised, prompted and frozen (template average).
        logits, frozen_logits: ``(B, C)``.

    Returns:
        ``{"image": mean |f_p - f|, "text": mean |g_p - g|,
        "logits": sum_bc q_bc (log q_bc - log p_bc) / (B C)}`` with ``p = softmax(logits)``,
        ``q = softmax(frozen_logits)``.
    """
    log_p, log_q = F.log_softmax(logits, dim=-1), F.log_softmax(frozen_logits, dim=-1)
    return {
        "image": F.l1_loss(image_features, frozen_image_features),
        "text": F.l1_loss(text_features, frozen_text_features),
        "logits": (log_q.exp() * (log_q - log_p)).sum() / logits.numel(),
    }
