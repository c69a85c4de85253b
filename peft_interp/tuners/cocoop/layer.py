"""CoCoOp's meta-net, kept in the tuner's shared module dict ``cocoop_meta_net`` (keyed by adapter name)."""

from __future__ import annotations

import torch
from torch import nn


class MetaNet(nn.Module):
    """``pi``: normalised image features ``(B, P)`` -> one context bias per image ``(B, D)``.

    Linear(P, P // reduction) - ReLU - Linear(P // reduction, D), PyTorch's default initialisation, as in CoCoOp.

    Args:
        image_width: ``P``, the projection size of CLIP's image features.
        text_width: ``D``, the width of the context vectors (CLIP's token-embedding size).
        reduction: ``P / hidden width`` (16 in the paper).
    """

    def __init__(self, image_width: int, text_width: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = image_width // reduction
        if hidden < 1:
            raise ValueError(
                f"`meta_net_reduction`={reduction} leaves no hidden unit for image features of width {image_width}: "
                f"use at most {image_width}."
            )
        self.linear1 = nn.Linear(image_width, hidden)
        self.relu = nn.ReLU()
        self.linear2 = nn.Linear(hidden, text_width)

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.relu(self.linear1(image_features)))
