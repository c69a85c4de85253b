"""IVPT's part-shaping losses against plain-Python loops over every index, on random maps of non-square, unequal
sizes (a 2 x 2 map cannot tell ``[:-1]`` from ``[:1]`` or height from width)."""

from __future__ import annotations

import math

import pytest
import torch

from peft_interp.tuners.ivpt import losses

GEN = torch.Generator().manual_seed(3)


def random_maps(batch=3, concepts=4, height=5, width=7):
    return torch.randn(batch, concepts, height, width, generator=GEN, dtype=torch.float64).softmax(dim=1)


def pooled3(maps, b, k, y, x):
    return sum(maps[b, k, y + i, x + j] for i in range(3) for j in range(3)) / 9


def test_total_variation_is_a_loop_over_vertical_and_horizontal_neighbours():
    maps = random_maps()
    batch, concepts, height, width = maps.shape
    total = 0.0
    for b in range(batch):
        for k in range(concepts):
            for y in range(height):
                for x in range(width):
                    if y + 1 < height:
                        total += abs(maps[b, k, y + 1, x] - maps[b, k, y, x])
                    if x + 1 < width:
                        total += abs(maps[b, k, y, x + 1] - maps[b, k, y, x])
    torch.testing.assert_close(losses.total_variation_loss(maps), total / (batch * height * width))


def test_presence_is_a_loop_over_groups_concepts_and_pooled_positions():
    maps = random_maps(batch=5)
    for group_size in (None, 2, 5):
        size = group_size or 5
        groups = [range(start, min(start + size, 5)) for start in range(0, 5, size)]
        per_group = []
        for images in groups:
            peaks = [max(pooled3(maps, b, k, y, x) for b in images for y in range(3) for x in range(5))
                     for k in range(3)]  # foreground only; (5 - 2) x (7 - 2) pooled positions
            per_group.append(1 - sum(peaks) / 3)
        torch.testing.assert_close(losses.presence_loss(maps, group_size), sum(per_group) / len(per_group))


@pytest.mark.parametrize("corner", ["none", "bottom right", "top left"])
def test_background_presence_is_a_loop_with_the_radial_weight(corner):
    maps = random_maps(batch=2)
    if corner != "none":  # background strongest in one corner, so that the weight of every corner matters
        rows, cols = (slice(2, 5), slice(4, 7)) if corner == "bottom right" else (slice(0, 3), slice(0, 3))
        maps[:, 3, rows, cols] += 3.0
        maps = maps / maps.sum(dim=1, keepdim=True)
    pooled_h, pooled_w = 3, 5
    ys = [-1 + 2 * i / (pooled_h - 1) for i in range(pooled_h)]
    xs = [-1 + 2 * j / (pooled_w - 1) for j in range(pooled_w)]
    weight = [[ys[i] ** 2 + xs[j] ** 2 for j in range(pooled_w)] for i in range(pooled_h)]
    top = max(max(row) for row in weight)
    per_image = []
    for b in range(2):
        peak = max(pooled3(maps, b, 3, y, x) * weight[y][x] / top for y in range(pooled_h) for x in range(pooled_w))
        per_image.append(-math.log(float(peak)))  # BCE against 1
    torch.testing.assert_close(losses.background_presence_loss(maps), torch.tensor(sum(per_image) / 2,
                                                                                     dtype=torch.float64))


def test_pixel_entropy_is_a_loop_with_the_clamp():
    maps = random_maps(batch=2, concepts=3, height=2, width=3)
    maps[0, :, 0, 0] = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)  # zeros are clamped at 1e-6
    total = 0.0
    for b in range(2):
        for y in range(2):
            for x in range(3):
                probs = [max(float(maps[b, k, y, x]), 1e-6) for k in range(3)]
                probs = [p / sum(probs) for p in probs]
                total += -sum(p * math.log(p) for p in probs)
    torch.testing.assert_close(losses.pixel_entropy_loss(maps), torch.tensor(total / 12, dtype=torch.float64))


def test_orthogonality_is_a_loop_over_pairs_of_normalised_features():
    features = torch.randn(2, 3, 5, generator=GEN, dtype=torch.float64)
    total = 0.0
    for b in range(2):
        units = [features[b, k] / features[b, k].norm() for k in range(3)]
        for i in range(3):
            for j in range(3):
                total += (float(units[i] @ units[j]) - (1.0 if i == j else 0.0)) ** 2
    torch.testing.assert_close(losses.orthogonality_loss(features), torch.tensor(total / 18, dtype=torch.float64))


def test_equivariance_is_one_minus_the_mean_foreground_cosine():
    maps, back = random_maps(batch=2), random_maps(batch=2)
    cosines = []
    for b in range(2):
        for k in range(3):  # foreground only
            a, c = maps[b, k].flatten(), back[b, k].flatten()
            cosines.append(float(a @ c / (a.norm() * c.norm())))
    torch.testing.assert_close(losses.equivariance_loss(maps, back), torch.tensor(1 - sum(cosines) / 6,
                                                                                   dtype=torch.float64))


def test_random_affine_draws_within_the_configured_ranges():
    """Rotation, scale and whole-pixel shift recovered from the matrices stay inside the configured ranges, and the
    shift is a whole number of pixels."""
    torch.manual_seed(0)
    warp, unwarp = losses.random_affine(64, 20, 30.0, 0.1, (0.9, 1.2), per_image=True)
    linear = unwarp[:, :, :2]  # s R
    scale = linear.det().sqrt()
    angle = torch.atan2(linear[:, 1, 0], linear[:, 0, 0]) * 180 / math.pi
    shift_px = unwarp[:, :, 2] * 20 / 2
    assert (scale >= 0.9 - 1e-6).all() and (scale <= 1.2 + 1e-6).all() and scale.std() > 0.05
    assert (angle.abs() <= 30 + 1e-4).all() and angle.abs().max() > 20
    assert (shift_px.abs() <= 2 + 1e-5).all() and shift_px.abs().max() >= 1
    torch.testing.assert_close(shift_px, shift_px.round(), atol=1e-5, rtol=0)
    identity = torch.eye(3)[:2].expand(64, 2, 3)
    full = lambda m: torch.cat([m, torch.tensor([[[0.0, 0.0, 1.0]]]).expand(len(m), 1, 3)], dim=1)  # noqa: E731
    torch.testing.assert_close(full(warp) @ full(unwarp), full(identity), atol=1e-5, rtol=0)
