"""From concept / prototype activation maps to the per-image inputs of the part metrics.

* :func:`part_vectors` — which object parts (keypoints) lie in the box around each map's peak (EvalProtoPNet);
  input of ``part_consistency`` and ``part_stability``.
* :func:`stability_noise` — the input perturbation of the stability protocol.
* :func:`part_mass` — the share of each map's mass inside each ground-truth part mask; input of
  ``concept_alignment``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

FRAME_SIZE = 224  # keypoint frame of the EvalProtoPNet protocol: bbox crop resized to 224 x 224
BOX_HALF_SIZE = 36  # half-size of the box around a map's peak in that frame, in pixels
_CHUNK = 16  # images upsampled at once: (16, P, 224, 224) float32 is ~35 MB per 11 maps


def scaled_box_half_size(frame_size: int) -> int:
    """The protocol's half-size (36 px in a 224 frame) scaled to a ``frame_size`` frame, rounded to an integer."""
    return round(BOX_HALF_SIZE * frame_size / FRAME_SIZE)


def peak_positions(maps: torch.Tensor, frame_size: int = FRAME_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column (each ``(B, P)`` long) of each map's maximum once upsampled to ``frame_size x frame_size``.

    maps: ``(B, P, h, w)``. Upsampling is bicubic with ``align_corners=False``; the peak is the first maximum in
    row-major order (``torch.argmax`` over the flattened map).
    """
    peaks = []
    for chunk in maps.float().split(_CHUNK):
        upsampled = F.interpolate(chunk, size=(frame_size, frame_size), mode="bicubic", align_corners=False)
        peaks.append(upsampled.flatten(2).argmax(dim=-1))  # (b, P) index into frame_size * frame_size
    flat_peak = torch.cat(peaks)  # (B, P)
    return flat_peak // frame_size, flat_peak % frame_size


def part_vectors(
    maps: torch.Tensor,
    keypoints: torch.Tensor,
    visible: torch.Tensor,
    frame_size: int = FRAME_SIZE,
    box_half_size: int = BOX_HALF_SIZE,
) -> torch.LongTensor:
    """Part vectors of the EvalProtoPNet protocol (Huang et al. 2023): ``(B, P, K)`` long, 1 = part k in the box.

    Args:
        maps: ``(B, P, h, w)`` activation maps of P prototypes / concepts.
        keypoints: ``(B, K, 2)`` pixel coordinates ``(x, y)`` of the K part keypoints in the ``frame_size x
            frame_size`` frame (x = column, y = row, in the same units as pixel indices).
        visible: ``(B, K)`` bool, whether each keypoint is visible.
        frame_size: side of the keypoint frame (224 in the protocol).
        box_half_size: half-size of the box in that frame (36 in the protocol; see :func:`scaled_box_half_size`).

    Each map is upsampled (bicubic, ``align_corners=False``) to the frame and its peak (row r, column c) taken as
    the first maximum in row-major order. The box is the closed rectangle

        max(0, c - box_half_size) <= x <= min(frame_size, c + box_half_size)
        max(0, r - box_half_size) <= y <= min(frame_size, r + box_half_size)

    i.e. both edges are inclusive: with a peak at column 50 and half-size 36 a keypoint at x = 14 or x = 86 is
    inside, at x = 13.99 or 86.01 outside; near the border the box is clipped to the frame, so a keypoint at
    x = -0.5 is outside a box around column 2. part_vector[p, k] = 1 iff keypoint k is visible and inside the box.
    """
    rows, columns = peak_positions(maps, frame_size)  # (B, P) each
    x = keypoints[..., 0].to(torch.float64)[:, None, :]  # (B, 1, K)
    y = keypoints[..., 1].to(torch.float64)[:, None, :]
    columns = columns.to(torch.float64)[..., None]  # (B, P, 1)
    rows = rows.to(torch.float64)[..., None]
    inside_x = ((columns - box_half_size).clamp(min=0) <= x) & (x <= (columns + box_half_size).clamp(max=frame_size))
    inside_y = ((rows - box_half_size).clamp(min=0) <= y) & (y <= (rows + box_half_size).clamp(max=frame_size))
    return (inside_x & inside_y & visible.bool()[:, None, :]).long()


def stability_noise(
    pixel_values: torch.Tensor, generator: torch.Generator | None = None, std: float = 0.2, clip: float = 0.25
) -> torch.Tensor:
    """``pixel_values + clamp(N(0, std), -clip, clip)``: the stability protocol's noise, on the normalised input.

    ``generator`` must live on ``pixel_values``' device.
    """
    noise = torch.randn(pixel_values.shape, generator=generator, device=pixel_values.device, dtype=pixel_values.dtype)
    return pixel_values + (noise * std).clamp(-clip, clip)


def part_mass(maps: torch.Tensor, part_masks: torch.Tensor, num_parts: int) -> torch.Tensor:
    """Fraction of each map's mass inside each ground-truth part: ``(B, P, num_parts)`` float, rows sum to <= 1.

    Args:
        maps: ``(B, P, h, w)`` concept maps; upsampled bilinearly (``align_corners=False``) to the mask size,
            clamped at 0 and normalised to sum 1 per map (a map that is 0 everywhere has mass 0 on every part).
        part_masks: ``(B, H, W)`` integer labels, 0 = background, 1..num_parts = parts (part k -> column k - 1).
        num_parts: number of foreground parts K.

    The mass missing from a row (1 - its sum) lies on the background.
    """
    height, width = part_masks.shape[-2:]
    upsampled = F.interpolate(maps.float(), size=(height, width), mode="bilinear", align_corners=False).clamp(min=0)
    flat = upsampled.flatten(2)  # (B, P, H*W)
    totals = flat.sum(dim=-1, keepdim=True)  # (B, P, 1)
    distribution = flat / torch.where(totals > 0, totals, torch.ones_like(totals))
    in_part = F.one_hot(part_masks.long().flatten(1), num_parts + 1)[..., 1:].to(flat.dtype)  # (B, H*W, K)
    return distribution @ in_part  # (B, P, K)
