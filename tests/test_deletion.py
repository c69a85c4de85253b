"""Deletion faithfulness: curves from a hand-built model whose answer is known, and the metric's arithmetic."""

import pytest
import torch

from peft_interp.evaluation import (
    delete_patches,
    deletion_curves,
    load_metric,
    random_patch_masks,
    top_patch_masks,
)
from peft_interp.tuners.explanation import Explanation

SIZE, GRID = 8, 4  # 8 x 8 pixels, a 4 x 4 grid of 2 x 2 patches
REGION_A = (slice(0, 2), slice(0, 2))  # top-left 2 x 2 patches
REGION_B = (slice(2, 4), slice(2, 4))  # bottom-right 2 x 2 patches


def pixel_region(region):
    return tuple(slice(2 * part.start, 2 * part.stop) for part in region)


def hand_built_explain(pixel_values: torch.Tensor) -> Explanation:
    """A model whose class 0 logit is sum(pixels in A) + 2 * sum(pixels in B) (concept 0 contributes the first,
    concept 1 the second), class 1 logit is 0, and whose concept maps are exactly A and B (intact images)."""
    a = pixel_values[(..., *pixel_region(REGION_A))].sum(dim=(1, 2, 3))
    b = pixel_values[(..., *pixel_region(REGION_B))].sum(dim=(1, 2, 3))
    class_contributions = torch.zeros(len(pixel_values), 2, 2)
    class_contributions[:, 0, 0], class_contributions[:, 0, 1] = a, 2 * b
    maps = torch.zeros(len(pixel_values), 2, GRID, GRID)
    maps[(slice(None), 0, *REGION_A)] = 1.0
    maps[(slice(None), 1, *REGION_B)] = 1.0
    maps[:, :, 0, 3] = 0.5  # a patch outside both regions, ranked right after them
    logits = class_contributions.sum(-1)
    return Explanation(logits=logits, predictions=logits.argmax(-1), maps=maps, class_contributions=class_contributions)


def test_masks_pick_the_top_patches_and_delete_whole_patches():
    maps = torch.arange(16.0).view(1, 1, 4, 4)
    assert top_patch_masks(maps, 0.25)[0, 0].nonzero().tolist() == [[3, 0], [3, 1], [3, 2], [3, 3]]
    assert top_patch_masks(maps, 0.01).sum() == 1  # at least one patch
    masks = torch.zeros(1, 4, 4, dtype=torch.bool)
    masks[0, 1, 2] = True
    deleted = delete_patches(torch.ones(1, 3, 8, 8), masks, fill=-1.0)
    expected = torch.ones(1, 3, 8, 8)
    expected[:, :, 2:4, 4:6] = -1.0
    torch.testing.assert_close(deleted, expected)
    random = random_patch_masks(5, (4, 4), 0.25, torch.Generator().manual_seed(0))
    assert random.shape == (5, 4, 4) and (random.flatten(1).sum(1) == 4).all()


def test_deletion_curves_of_the_hand_built_model():
    pixels = torch.ones(2, 3, SIZE, SIZE)  # A and B each hold 4 patches x 4 pixels x 3 channels = 48
    curves = deletion_curves(hand_built_explain, pixels, fractions=[0.25, 0.3125], random_repeats=300,
                             generator=torch.Generator().manual_seed(0))  # fmt: skip
    # 25%: 4 patches = exactly the concept's region; 31.25%: 5 patches = the region and the 0.5 patch (0 weight)
    assert curves["concept_logit_drops"] == [[48.0, 48.0], [96.0, 96.0]] * 2  # rows: (image 0, A), (0, B), ...
    assert curves["concept_contribution_drops"] == [[48.0, 48.0], [96.0, 96.0]] * 2
    # random: k of 16 patches; expected drop k / 16 of each region's share: logit 144 k / 16, concept n its own
    for row, own in zip(curves["random_logit_drops"], [144, 144, 144, 144]):
        assert row == pytest.approx([own * 4 / 16, own * 5 / 16], rel=0.1)
    for row, own in zip(curves["random_contribution_drops"], [48, 96, 48, 96]):
        assert row == pytest.approx([own * 4 / 16, own * 5 / 16], rel=0.15)

    result = load_metric("deletion_faithfulness").compute(**curves, fractions=[0.25, 0.3125])
    # concept AUC: drop d at both points -> trapezoid (0.25 * d / 2 + 0.0625 * d) / 0.3125 = 0.6 d
    assert result["concept_logit_auc"] == pytest.approx(0.6 * (48 + 96) / 2)
    assert result["concept_contribution_auc"] == pytest.approx(0.6 * (48 + 96) / 2)
    # random logit: (0.25 * 36 / 2 + 0.0625 * (36 + 45) / 2) / 0.3125 = 22.5 (expected value)
    assert result["random_logit_auc"] == pytest.approx(22.5, rel=0.1)
    # concept A's logit drop (28.8) beats random (22.5), so does B's; contributions: A 28.8 vs 7.5, B 57.6 vs 15
    assert result["logit_win_rate"] == 100.0 and result["contribution_win_rate"] == 100.0
    assert result["num_rows"] == 4


def test_an_explanation_pointing_away_from_the_evidence_loses_to_random():
    def misleading(pixel_values):
        explanation = hand_built_explain(pixel_values)
        maps = torch.zeros_like(explanation.maps)
        maps[:, :, 3, 0] = 1.0  # both maps mark the bottom-left patch, which the logit ignores
        explanation.maps = maps
        return explanation

    curves = deletion_curves(misleading, torch.ones(1, 3, SIZE, SIZE), fractions=[0.0625], random_repeats=50,
                             generator=torch.Generator().manual_seed(1))  # fmt: skip
    assert curves["concept_logit_drops"] == [[0.0], [0.0]]
    result = load_metric("deletion_faithfulness").compute(**curves, fractions=[0.0625])
    assert result["concept_logit_auc"] == 0.0 and result["random_logit_auc"] > 0 and result["logit_win_rate"] == 0.0


def test_deletion_needs_maps_and_sane_fractions():
    with pytest.raises(ValueError, match="needs explanations with `maps`"):
        deletion_curves(lambda x: Explanation(logits=torch.zeros(1, 2), predictions=torch.zeros(1).long()),
                        torch.ones(1, 3, SIZE, SIZE))  # fmt: skip
    rows = {key: [[1.0]] for key in ("concept_logit_drops", "random_logit_drops", "concept_contribution_drops",
                                     "random_contribution_drops")}  # fmt: skip
    with pytest.raises(ValueError, match="fractions must be increasing"):
        load_metric("deletion_faithfulness").compute(**rows, fractions=[0.0])
    with pytest.raises(ValueError, match="one drop per fraction"):
        load_metric("deletion_faithfulness").compute(**rows, fractions=[0.1, 0.2])


def test_methods_without_contributions_get_nan_contribution_results():
    def no_contributions(pixel_values):
        explanation = hand_built_explain(pixel_values)
        explanation.class_contributions = None
        return explanation

    curves = deletion_curves(no_contributions, torch.ones(1, 3, SIZE, SIZE), fractions=[0.25])
    assert curves["concept_logit_drops"] == [[48.0], [96.0]]
    result = load_metric("deletion_faithfulness").compute(**curves, fractions=[0.25])
    assert result["concept_logit_auc"] == pytest.approx(0.5 * (48 + 96) / 2)
    assert all(result[key] != result[key] for key in ("concept_contribution_auc", "contribution_win_rate"))  # NaN
