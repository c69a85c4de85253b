"""DualViewMI's mutual-information estimators and class-wise visual augmentation (pure functions + the critics).

Shapes: ``C`` classes, ``B`` images, ``P`` joint embedding width; all features L2-normalised.

Every estimator here is InfoNCE (van den Oord et al., 2018) with some critic ``T(a, b)``: for ``n`` positive pairs
``(a_i, b_i)`` with the other ``b_j`` as negatives, ``L = -(1/n) sum_i log softmax_j T(a_i, b_j)[i]`` and
``I(A; B) >= log n - L`` whatever the critic (Poole et al., "On Variational Bounds of Mutual Information", 2019).
Training the critic to lower ``L`` tightens the bound (the MINE / InfoNCE family of learnt estimators).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def infonce_from_scores(scores: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE of a square ``(C, C)`` score matrix whose diagonal holds the positive pairs."""
    targets = torch.arange(len(scores), device=scores.device)
    return (F.cross_entropy(scores, targets) + F.cross_entropy(scores.T, targets)) / 2


def infonce_mi_loss(soft: torch.Tensor, hand: torch.Tensor, temperature: float, critic: torch.Tensor | None = None):
    """Symmetric InfoNCE between two views of the ``C`` classes, ``(C, P)`` each; class ``c`` in one view is the
    positive of class ``c`` in the other, the other classes are negatives.

    ``L = (CE(scores, diag) + CE(scores^T, diag)) / 2`` with ``scores = soft @ W @ hand^T / tau`` (``W`` = the
    optional ``(P, P)`` bilinear critic, identity if None). ``log C - L`` is a lower bound on ``I(S; H)``.
    """
    scores = (soft @ critic if critic is not None else soft) @ hand.T / temperature  # (C, C)
    targets = torch.arange(len(soft), device=soft.device)
    return (F.cross_entropy(scores, targets) + F.cross_entropy(scores.T, targets)) / 2


def mi_lower_bound(loss: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The InfoNCE bound on the mutual information, ``log C - L`` (nats)."""
    return math.log(num_classes) - loss


def mixup_weights(batch_size: int, alpha: float, device=None) -> torch.Tensor:
    """``(B,)`` weights ``lam ~ Beta(alpha, alpha)``, folded to ``max(lam, 1 - lam)`` so the first term dominates."""
    lam = torch.distributions.Beta(alpha, alpha).sample((batch_size,)).to(device)
    return torch.maximum(lam, 1 - lam)


def same_class_partners(labels: torch.Tensor) -> torch.Tensor:
    """``(B,)`` index of a random other sample of the same class for each sample (itself if it is alone)."""
    partners = torch.arange(len(labels), device=labels.device)
    for label in labels.unique():
        members = (labels == label).nonzero().squeeze(1)
        if len(members) > 1:
            shift = torch.randint(1, len(members), (1,), device=labels.device)
            partners[members] = members.roll(int(shift))
    return partners


def prompt_mixup_loss(soft, hand, image_embeds, labels, lam, temperature) -> torch.Tensor:
    """Soft prompt of each sample's class mixed with its own image feature, ``t_i = norm(lam s_y + (1-lam) f_i)``,
    classified among the hand-crafted views: ``CE(t @ hand^T / tau, y)``."""
    mixed = F.normalize(lam[:, None] * soft[labels] + (1 - lam[:, None]) * image_embeds, dim=-1)  # (B, P)
    return F.cross_entropy(mixed @ hand.T / temperature, labels)


def feature_mixup_loss(soft, image_embeds, labels, lam, logit_scale) -> torch.Tensor:
    """Image features mixed with a same-class partner, ``norm(lam f_i + (1-lam) f_j)``, classified by the soft view."""
    partners = same_class_partners(labels)
    mixed = F.normalize(lam[:, None] * image_embeds + (1 - lam[:, None]) * image_embeds[partners], dim=-1)
    return F.cross_entropy(logit_scale * mixed @ soft.T, labels)


class BilinearCritic(nn.Module):
    """A learnt ``(P, P)`` matrix ``W`` (identity at start) scoring view pairs as ``s^T W h``."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.eye(width))


def visual_mixup(image_embeds: torch.Tensor, labels: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """Class-wise visual mixup: each image feature mixed with a random other image of its class (itself if alone),
    ``norm(lam_i f_i + (1 - lam_i) f_j)`` with ``y_j = y_i``; ``(B, P) -> (B, P)``."""
    partners = same_class_partners(labels)
    return F.normalize(lam[:, None] * image_embeds + (1 - lam[:, None]) * image_embeds[partners], dim=-1)


class MLPCritic(nn.Module):
    """A learnt critic ``T(a, b) = a.b / tau + w2 . GELU(W_a a + W_b b + W_ab (a * b) + b1)`` (scalar per pair).

    The first term is the parameter-free InfoNCE critic; the MLP on the pair (its concatenation and elementwise
    product, as MINE's statistics network on a joint input) adds what it learns. ``w2`` starts at zero, so training
    starts from the cosine critic. Scores are computed for every pair without materialising ``(n, m, 3P)`` inputs:
    ``W_a a`` and ``W_b b`` are computed once per row, only ``W_ab (a * b)`` per pair.

    Args:
        width: ``P``. hidden_size: hidden units of the MLP. temperature: ``tau`` of the cosine term.
    """

    def __init__(self, width: int, hidden_size: int, temperature: float) -> None:
        super().__init__()
        self.temperature = temperature
        self.left, self.right = nn.Linear(width, hidden_size), nn.Linear(width, hidden_size, bias=False)
        self.product = nn.Linear(width, hidden_size, bias=False)
        self.out = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Scores ``(n, m)`` of every pair of ``a`` ``(n, P)`` and ``b`` ``(m, P)``."""
        hidden = self.left(a)[:, None] + self.right(b)[None] + self.product(a[:, None] * b[None])  # (n, m, H)
        return a @ b.T / self.temperature + self.out(F.gelu(hidden)).squeeze(-1)
