"""IVPT's losses, one function each.

The part-shaping losses (presence, background presence, total variation, pixel entropy, equivariance,
orthogonality) come from PDiscoNet / PDiscoFormer; the cross-layer consistency loss is IVPT's. Maps are concept
attention maps ``(B, K, h, w)`` that sum to 1 over ``K``, the last channel being background.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def consistency_loss(target: torch.Tensor, predictions: list[torch.Tensor], eps: float = 1e-10) -> torch.Tensor:
    """Cross-layer concept consistency: ``mean over layers of KL(target || prediction)``.

    Args:
        target: ``(B, N + 1, L)`` final-level maps (detached here: the target does not learn from this loss).
        predictions: per prompted layer ``(B, N + 1, L)`` grouped maps.

    The KL is summed over channels and averaged over pixels and batch.
    """
    if not predictions:
        return target.new_zeros(())
    target = target.detach()
    log_target = (target + eps).log()
    per_layer = [(target * (log_target - (pred + eps).log())).sum(dim=1).mean() for pred in predictions]
    return torch.stack(per_layer).mean()


def presence_loss(maps: torch.Tensor, group_size: int | None = None) -> torch.Tensor:
    """``1 - mean over foreground k of max over images and space of avgpool3x3(A_k)``: each concept must appear
    strongly somewhere in a group of images.

    Args:
        maps: ``(B, K, h, w)``.
        group_size: the max runs over consecutive groups of this many images and the loss is the mean over groups
            (the official code takes it over each GPU's batch: 4 images of 16); ``None`` = the whole batch.
    """
    pooled = F.avg_pool2d(maps[:, :-1], kernel_size=3, stride=1)  # (B, K - 1, h - 2, w - 2)
    groups = pooled.split(group_size or pooled.shape[0])  # each (<= G, K - 1, h', w')
    return torch.stack([1 - group.amax(dim=(0, 2, 3)).mean() for group in groups]).mean()


def background_presence_loss(maps: torch.Tensor) -> torch.Tensor:
    """Enforce background near the image border: the background map, avg-pooled 3x3 and weighted by the radial mask
    ``(x^2 + y^2) / max`` on a ``[-1, 1]`` grid, must reach 1 somewhere in every image (BCE against 1)."""
    pooled = F.avg_pool2d(maps[:, -1:], kernel_size=3, stride=1)[:, 0]  # (B, h', w')
    ys = torch.linspace(-1, 1, pooled.shape[1], device=maps.device, dtype=maps.dtype)
    xs = torch.linspace(-1, 1, pooled.shape[2], device=maps.device, dtype=maps.dtype)
    radius = ys[:, None] ** 2 + xs[None, :] ** 2
    peak = (pooled * radius / radius.max()).amax(dim=(1, 2))  # (B,)
    return F.binary_cross_entropy(peak.clamp(0, 1), torch.ones_like(peak))


def total_variation_loss(maps: torch.Tensor) -> torch.Tensor:
    """``sum(|dA/dy| + |dA/dx|)`` over channels and space, divided by ``B * h * w``."""
    batch, _, height, width = maps.shape
    dy = (maps[:, :, 1:] - maps[:, :, :-1]).abs().sum()
    dx = (maps[:, :, :, 1:] - maps[:, :, :, :-1]).abs().sum()
    return (dy + dx) / (batch * height * width)


def pixel_entropy_loss(maps: torch.Tensor) -> torch.Tensor:
    """Mean entropy of each pixel's distribution over concepts (maps clamped at 1e-6 and renormalised)."""
    probs = maps.clamp_min(1e-6)
    probs = probs / probs.sum(dim=1, keepdim=True)
    return -(probs * probs.log()).sum(dim=1).mean()


def orthogonality_loss(features: torch.Tensor) -> torch.Tensor:
    """``mean((F^T F - I)^2)`` of the L2-normalised concept features ``(B, K, D)``: concepts should differ."""
    unit = F.normalize(features, dim=-1)
    gram = unit @ unit.transpose(1, 2)  # (B, K, K)
    identity = torch.eye(gram.shape[-1], device=gram.device, dtype=gram.dtype)
    return (gram - identity).pow(2).mean()


def equivariance_loss(maps: torch.Tensor, maps_back: torch.Tensor) -> torch.Tensor:
    """``1 - mean cosine similarity`` of flattened foreground maps: ``maps`` of the images ``(B, K, h, w)`` against
    ``maps_back``, the maps of the transformed images mapped back by the inverse transform."""
    similarity = F.cosine_similarity(maps[:, :-1].flatten(2), maps_back[:, :-1].flatten(2), dim=-1)
    return 1 - similarity.mean()


# ------------------------------------------------------------------------------------- equivariance transforms
def random_affine(
    batch_size: int,
    image_size: int,
    max_rotation: float,
    max_translation: float,
    scale_range: tuple[float, float],
    device: torch.device | None = None,
    per_image: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random similarity transforms and their inverses as ``affine_grid`` matrices ``(B, 2, 3)``.

    ``per_image=False`` draws one transform and repeats it for the whole batch (the official code's choice).

    The transform rotates by U(-r, r) degrees, scales by U(lo, hi) and shifts by a whole number of pixels
    ``round(U(-t * S, t * S))`` per axis. Returns ``(warp, unwarp)``: sampling an image with ``warp`` applies the
    transform, sampling the result (or maps of any resolution) with ``unwarp`` undoes it.
    """
    draws = batch_size if per_image else 1
    angle = torch.empty(draws, device=device).uniform_(-max_rotation, max_rotation) * math.pi / 180
    scale = torch.empty(draws, device=device).uniform_(*scale_range)
    shift_px = torch.empty(draws, 2, device=device).uniform_(-max_translation, max_translation)
    shift = (shift_px * image_size).round() * 2 / image_size  # whole pixels, in [-1, 1] coordinates
    cos, sin = angle.cos(), angle.sin()
    rotation = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # (B, 2, 2)

    # forward map: x_out = s R x_in + t.  Sampling grids map output coordinates to input coordinates.
    forward_linear = scale[:, None, None] * rotation
    unwarp = torch.cat([forward_linear, shift.unsqueeze(-1)], dim=-1)
    inverse_linear = rotation.transpose(1, 2) / scale[:, None, None]
    warp = torch.cat([inverse_linear, -(inverse_linear @ shift.unsqueeze(-1))], dim=-1)
    return warp.expand(batch_size, 2, 3), unwarp.expand(batch_size, 2, 3)


def warp_images(images: torch.Tensor, theta: torch.Tensor, mode: str) -> torch.Tensor:
    """Resample ``(B, C, H, W)`` with the sampling matrices ``theta`` ``(B, 2, 3)``; zeros outside."""
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode=mode, padding_mode="zeros", align_corners=False)
