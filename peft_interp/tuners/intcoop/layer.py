"""IntCoOp's learnt modules besides the context: the image conditioner, the attribute extractor, visual prompts.

The conditioner and the extractor live in shared module dicts of :class:`~peft_interp.IntCoOpModel`
(``intcoop_conditioner``, ``intcoop_attribute``), keyed by adapter name; the visual prompts are the prompt sources
of the :class:`~peft_interp.tuners.layers.PromptedBlock` wrappers of the first vision blocks. Shapes: ``D`` = text
width (token-embedding size, 512 for ViT-B/16), ``P`` = projection size (512), ``W`` = vision width (768),
``N`` = image tokens (197 for ViT-B/16 at 224 px), ``M`` = context vectors.
"""

from __future__ import annotations

import torch
from torch import nn


class ContextConditioner(nn.Module):
    """Makes the shared context image-specific: ``v_i(x) = v_i + MHA_i(Q=v, K=V=image tokens)``.

    Args:
        text_width: ``D``, the width of the context vectors (queries and output).
        image_width: ``P``, the width of the image tokens (keys and values).
        num_heads: attention heads; must divide ``text_width``.
        residual: add the attention output to the context (``True``) or use it alone.
    """

    def __init__(self, text_width: int, image_width: int, num_heads: int, residual: bool = True) -> None:
        super().__init__()
        if text_width % num_heads:
            raise ValueError(
                f"`num_attention_heads`={num_heads} must divide the text width {text_width} of the CLIP model."
            )
        self.residual = residual
        self.attention = nn.MultiheadAttention(
            text_width, num_heads, kdim=image_width, vdim=image_width, batch_first=True
        )

    def forward(self, context: torch.Tensor, image_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(M, D)`` context, ``(B, N, P)`` image tokens -> ``(B, M, D)`` conditioned context and ``(B, M, N)``
        attention weights (averaged over heads)."""
        queries = context.to(image_tokens.dtype).expand(image_tokens.shape[0], -1, -1)  # (B, M, D)
        attended, weights = self.attention(queries, image_tokens, image_tokens, need_weights=True)
        return (queries + attended if self.residual else attended), weights


class AttributeExtractor(nn.Module):
    """``A``: projected pooled image feature ``(B, P)`` -> attribute embedding ``(B, D)`` in token-embedding space.

    Args:
        image_width: ``P``.
        text_width: ``D``.
        hidden_size: width of the MLP's hidden layer, or ``None`` for a single linear map.
    """

    def __init__(self, image_width: int, text_width: int, hidden_size: int | None) -> None:
        super().__init__()
        if hidden_size is None:
            self.net = nn.Linear(image_width, text_width)
        else:
            self.net = nn.Sequential(nn.Linear(image_width, hidden_size), nn.GELU(), nn.Linear(hidden_size, text_width))

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        return self.net(image_features)


class VisualPrompt(nn.Module):
    """Deep visual prompt tokens ``(T, W)`` of one vision block (``W`` = vision width), the same for every image,
    initialised from N(0, std)."""

    def __init__(self, num_tokens: int, width: int, std: float) -> None:
        super().__init__()
        self.tokens = nn.Parameter(torch.randn(num_tokens, width) * std)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """``(B, N, W)`` block input -> ``(B, T, W)`` prompts."""
        return self.tokens.expand(hidden_states.shape[0], -1, -1)
