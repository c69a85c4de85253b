"""IVPT's building blocks and losses against naive loop implementations and hand-computed cases."""

import math

import torch
import torch.nn.functional as F

from peft_interp.tuners.ivpt import losses
from peft_interp.tuners.ivpt.layer import concept_attention, group_concepts, region_features, renormalize_maps

GEN = torch.Generator().manual_seed(0)


def randn(*shape):
    return torch.randn(*shape, generator=GEN, dtype=torch.float64)


def test_concept_attention_is_softmax_of_negative_squared_distance_plus_bias():
    features, prototypes, bias = randn(2, 6, 5), randn(3, 5), randn(3, 6)
    expected = torch.empty(2, 3, 6, dtype=torch.float64)
    for b in range(2):
        for l in range(6):
            scores = torch.stack([-((features[b, l] - prototypes[k]) ** 2).sum() + bias[k, l] for k in range(3)])
            expected[b, :, l] = scores.softmax(0)
    torch.testing.assert_close(concept_attention(features, prototypes, bias), expected)


def naive_region_features(maps, features, height, width):
    """The reference formulation: a (B, D, K, H, W) product, summed over space."""
    batch, num_k, _ = maps.shape
    hard = torch.zeros_like(maps)
    for b in range(batch):
        for l in range(maps.shape[2]):
            hard[b, maps[b, :, l].argmax(), l] = 1.0
    regions = (hard * maps).view(batch, 1, num_k, height, width)  # (B, 1, K, H, W)
    grid_feats = features.transpose(1, 2).reshape(batch, -1, 1, height, width)  # (B, D, 1, H, W)
    summed = (regions * grid_feats).sum(dim=(-1, -2))  # (B, D, K)
    mass = regions.sum(dim=(-1, -2))  # (B, 1, K)
    out = torch.where(mass > 0, summed / mass.clamp_min(1e-300), torch.zeros_like(summed))
    return out.transpose(1, 2), mass[:, 0]


def test_empty_region_has_zero_features_and_finite_gradients():
    # Concept 2 wins no patch: its region is empty. Its features are 0 and, downstream of a normalisation (the
    # orthogonality loss), gradients stay finite (a tiny denominator used to overflow them to inf * 0 = NaN).
    maps = torch.tensor([[[0.7, 0.6, 0.2], [0.2, 0.3, 0.7], [0.1, 0.1, 0.1]]], dtype=torch.float32, requires_grad=True)
    features = torch.randn(1, 3, 4, generator=GEN)
    feats, mass = region_features(maps, features)
    assert mass[0, 2] == 0 and torch.equal(feats[0, 2], torch.zeros(4))
    losses.orthogonality_loss(feats + 1e-3).backward()
    assert torch.isfinite(maps.grad).all()


def test_region_features_match_naive_five_dimensional_reference():
    maps = randn(3, 4, 12).softmax(dim=1)
    features = randn(3, 12, 7)
    feats, mass = region_features(maps, features)
    expected_feats, expected_mass = naive_region_features(maps, features, 3, 4)
    torch.testing.assert_close(feats, expected_feats)
    torch.testing.assert_close(mass, expected_mass)


def test_region_features_of_empty_region_is_zero_and_gradient_skips_argmax():
    maps = torch.tensor([[[0.9, 0.8], [0.1, 0.2]]], dtype=torch.float64, requires_grad=True)  # concept 1 wins nowhere
    features = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]], dtype=torch.float64)
    feats, mass = region_features(maps, features)
    assert mass[0, 1] == 0 and torch.equal(feats[0, 1], torch.zeros(2, dtype=torch.float64))
    torch.testing.assert_close(feats[0, 0], (0.9 * features[0, 0] + 0.8 * features[0, 1]) / 1.7)
    feats[0, 0, 0].backward()
    assert maps.grad[0, 1].abs().sum() == 0 and maps.grad[0, 0].abs().sum() > 0


def test_group_concepts_rows_sum_to_one_and_empty_rows_are_uniform():
    logits = randn(2, 5, 3)
    mass = torch.tensor([[1.0, 0.0, 2.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0, 1.0]], dtype=torch.float64)
    for gumbel in (False, True):
        grouping = group_concepts(logits, mass, gumbel=gumbel, tau=1.0)
        torch.testing.assert_close(grouping.sum(-1), torch.ones(2, 5, dtype=torch.float64))
        torch.testing.assert_close(grouping[0, 1], torch.full((3,), 1 / 3, dtype=torch.float64))
    torch.testing.assert_close(group_concepts(logits, mass, gumbel=False, tau=1.0)[1], logits[1].softmax(-1))


def test_renormalize_maps_adds_eps_then_normalizes():
    maps = torch.tensor([[[1.0], [0.0]]], dtype=torch.float64)
    torch.testing.assert_close(renormalize_maps(maps, 0.5), torch.tensor([[[0.75], [0.25]]], dtype=torch.float64))


# ---------------------------------------------------------------------------------------------------- losses
def test_consistency_loss_matches_naive_kl_loop():
    target = randn(2, 3, 4).softmax(1)
    predictions = [randn(2, 3, 4).softmax(1) for _ in range(3)]
    eps = 1e-10
    per_layer = []
    for pred in predictions:
        total = 0.0
        for b in range(2):
            for l in range(4):
                total += sum(
                    target[b, c, l] * (math.log(target[b, c, l] + eps) - math.log(pred[b, c, l] + eps))
                    for c in range(3)
                )
        per_layer.append(total / 8)
    expected = (sum(per_layer) / 3).to(torch.float64)
    torch.testing.assert_close(losses.consistency_loss(target, predictions, eps), expected)


def test_consistency_loss_is_zero_for_identical_maps_and_does_not_train_the_target():
    target = randn(2, 3, 4).softmax(1).requires_grad_(True)
    loss = losses.consistency_loss(target, [target.detach().clone()])
    assert loss.abs() < 1e-12
    assert not loss.requires_grad


def one_hot_maps(assignment, num_k):
    """(B, H, W) integer concept ids -> (B, K, H, W) one-hot maps."""
    return F.one_hot(assignment, num_k).permute(0, 3, 1, 2).double()


def test_presence_loss_zero_when_every_concept_fills_a_3x3_window_and_maximal_when_absent():
    assignment = torch.full((2, 6, 6), 2)  # background everywhere ...
    assignment[0, :3, :3] = 0  # ... concept 0 fills a 3x3 window in image 0
    assignment[1, 3:, 3:] = 1  # ... concept 1 in image 1
    assert losses.presence_loss(one_hot_maps(assignment, 3)) == 0
    only_background = one_hot_maps(torch.full((2, 6, 6), 2), 3)
    assert losses.presence_loss(only_background) == 1
    uniform = torch.full((2, 4, 6, 6), 0.25, dtype=torch.float64)
    torch.testing.assert_close(losses.presence_loss(uniform), torch.tensor(0.75, dtype=torch.float64))


def test_background_presence_zero_when_background_fills_border_and_large_when_missing():
    all_background = one_hot_maps(torch.full((2, 6, 6), 1), 2)
    assert losses.background_presence_loss(all_background) < 1e-12
    no_background = one_hot_maps(torch.zeros(2, 6, 6, dtype=torch.long), 2)
    assert losses.background_presence_loss(no_background) >= 50  # BCE(0 vs 1), log clamped at -100
    # background only at the centre pixel of a 5x5 map: every 3x3 window holds it once (1/9); the radial mask
    # reaches 1 only at the corners of the 3x3 pooled map, so the peak is 1/9 and the loss -log(1/9).
    centre = torch.zeros(1, 5, 5, dtype=torch.long)
    centre[0, 2, 2] = 1
    torch.testing.assert_close(
        losses.background_presence_loss(one_hot_maps(centre, 2)), torch.tensor(math.log(9), dtype=torch.float64)
    )


def test_total_variation_hand_computed():
    assert losses.total_variation_loss(torch.ones(2, 3, 4, 4)) == 0
    maps = torch.zeros(1, 1, 2, 2)
    maps[0, 0, 0, 0] = 1.0  # one corner: |dy| = 1, |dx| = 1
    torch.testing.assert_close(losses.total_variation_loss(maps), torch.tensor(2 / 4))


def test_pixel_entropy_zero_for_one_hot_and_log_k_for_uniform():
    one_hot = one_hot_maps(torch.randint(0, 5, (2, 4, 4), generator=GEN), 5)
    assert losses.pixel_entropy_loss(one_hot) < 1e-4
    uniform = torch.full((2, 5, 4, 4), 0.2, dtype=torch.float64)
    torch.testing.assert_close(losses.pixel_entropy_loss(uniform), torch.tensor(math.log(5), dtype=torch.float64))


def test_orthogonality_zero_for_orthogonal_and_hand_computed_for_identical():
    orthogonal = torch.eye(4, dtype=torch.float64)[None, :3] * torch.tensor([[2.0], [3.0], [0.5]], dtype=torch.float64)
    assert losses.orthogonality_loss(orthogonal) < 1e-12
    identical = torch.ones(2, 3, 4, dtype=torch.float64)
    torch.testing.assert_close(losses.orthogonality_loss(identical), torch.tensor(6 / 9, dtype=torch.float64))


def test_equivariance_loss_zero_for_identical_maps_and_one_for_disjoint():
    maps = randn(2, 4, 5, 5).softmax(1)
    assert losses.equivariance_loss(maps, maps) < 1e-12
    left = one_hot_maps(torch.zeros(1, 4, 4, dtype=torch.long), 2)
    right = one_hot_maps(torch.ones(1, 4, 4, dtype=torch.long), 2)
    assert losses.equivariance_loss(left, right) == 1


def test_random_affine_unwarp_inverts_warp():
    warp, unwarp = losses.random_affine(6, 32, 90.0, 0.11, (0.8, 1.4))
    bottom = torch.tensor([0.0, 0.0, 1.0]).expand(6, 1, 3)
    composed = torch.cat([warp, bottom], 1) @ torch.cat([unwarp, bottom], 1)
    torch.testing.assert_close(composed, torch.eye(3).expand(6, 3, 3), atol=1e-6, rtol=0)
    shifts_px = unwarp[:, :, 2] * 32 / 2
    torch.testing.assert_close(shifts_px, shifts_px.round(), atol=1e-5, rtol=0)  # whole-pixel translations
    assert shifts_px.abs().max() <= round(0.11 * 32)


def test_random_affine_per_batch_repeats_one_transform_and_per_image_draws_each():
    torch.manual_seed(0)
    warp, unwarp = losses.random_affine(5, 32, 90.0, 0.11, (0.8, 1.4), per_image=False)
    assert warp.shape == unwarp.shape == (5, 2, 3)
    assert all(torch.equal(warp[i], warp[0]) and torch.equal(unwarp[i], unwarp[0]) for i in range(5))
    warp, _ = losses.random_affine(5, 32, 90.0, 0.11, (0.8, 1.4), per_image=True)
    assert len({tuple(w.flatten().tolist()) for w in warp}) == 5


def test_presence_group_size_takes_the_max_within_each_group():
    assignment = torch.full((4, 6, 6), 2)  # background everywhere ...
    assignment[0, :3, :3] = 0  # concept 0 only in image 0, concept 1 only in image 3
    assignment[3, 3:, 3:] = 1
    maps = one_hot_maps(assignment, 3)
    assert losses.presence_loss(maps) == 0  # whole batch: both concepts appear
    # groups {0, 1} and {2, 3}: each group misses one of the two concepts -> 0.5 each
    assert losses.presence_loss(maps, group_size=2) == 0.5
    assert losses.presence_loss(maps, group_size=1) == (0.5 + 1 + 1 + 0.5) / 4


def test_identity_affine_leaves_images_unchanged():
    images = randn(2, 3, 8, 8).float()
    warp, unwarp = losses.random_affine(2, 8, 0.0, 0.0, (1.0, 1.0))
    torch.testing.assert_close(losses.warp_images(images, warp, "bilinear"), images)
    torch.testing.assert_close(losses.warp_images(images, unwarp, "nearest"), images)


def test_quarter_turn_is_exact_permutation():
    """A rotation by exactly 90 degrees maps the pixel grid onto itself: warping is a transpose + flip."""
    warp = torch.tensor([[[0.0, -1.0, 0.0], [1.0, 0.0, 0.0]]])
    image = torch.arange(16.0).view(1, 1, 4, 4)
    rotated = losses.warp_images(image, warp, "nearest")
    assert torch.equal(rotated, torch.rot90(image, k=1, dims=(2, 3))) or torch.equal(
        rotated, torch.rot90(image, k=-1, dims=(2, 3))
    )
