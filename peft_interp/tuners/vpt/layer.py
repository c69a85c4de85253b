"""VPT-deep's prompt source: a learnt set of tokens per prompted block."""

from __future__ import annotations

import math

import torch
from torch import nn


class PromptTokens(nn.Module):
    """Learnt prompt tokens ``(T, D)``, the same for every image.

    Initialised uniformly in ``(-v, v)`` with ``v = sqrt(6 / (3 * patch_size**2 + D))`` (Xavier uniform over the
    patch embedding's fan-in plus the width), as in the VPT paper.
    """

    def __init__(self, num_tokens: int, hidden_size: int, patch_size: int) -> None:
        super().__init__()
        bound = math.sqrt(6.0 / (3 * patch_size**2 + hidden_size))
        self.tokens = nn.Parameter(torch.empty(num_tokens, hidden_size).uniform_(-bound, bound))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """``(B, N, D)`` block input -> prompts ``(B, T, D)``."""
        return self.tokens.expand(hidden_states.shape[0], -1, -1)
