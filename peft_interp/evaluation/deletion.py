"""Deletion curves: are the regions an explanation marks the ones the decision rests on?

For every image and every named map of its explanation (IVPT's concepts, VPT-deep's prompt-token maps), the
patches where the map is largest are deleted (filled with 0, which in normalised model inputs is the dataset's mean
colour) for a growing fraction of the patch grid; after each deletion the model runs again and we record how much

* the logit of the class predicted on the intact image dropped, and
* that concept's contribution to it dropped (methods whose explanation has ``class_contributions``, e.g. IVPT),

next to the same drops when the same number of patches is deleted at random. A faithful explanation's regions make
the larger drops. The packaged ``deletion_faithfulness`` metric turns these curves into areas under the curve and a
win rate (:func:`peft_interp.evaluation.load_metric`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

DEFAULT_FRACTIONS = (0.1, 0.25, 0.5)


def top_patch_masks(maps: torch.Tensor, fraction: float) -> torch.Tensor:
    """``(B, N, h, w)`` maps -> ``(B, N, h, w)`` bool: per map its ``round(fraction * h * w)`` largest patches
    (at least one)."""
    count = max(1, round(fraction * maps.shape[-2] * maps.shape[-1]))
    flat = maps.flatten(2)  # (B, N, h * w)
    top = flat.topk(count, dim=-1).indices
    return torch.zeros_like(flat, dtype=torch.bool).scatter_(-1, top, True).view_as(maps)


def random_patch_masks(
    batch: int, grid: tuple[int, int], fraction: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``(B, h, w)`` bool: per image ``round(fraction * h * w)`` patches (at least one) drawn uniformly."""
    cells = grid[0] * grid[1]
    count = max(1, round(fraction * cells))
    order = torch.stack([torch.randperm(cells, generator=generator) for _ in range(batch)])  # (B, h * w)
    return (order < count).view(batch, *grid)


def delete_patches(pixel_values: torch.Tensor, masks: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
    """``pixel_values`` ``(B, 3, S, S)`` with the pixels of every masked patch set to ``fill``.

    Args:
        masks: ``(B, h, w)`` bool over the patch grid; each patch covers ``S / h`` x ``S / w`` pixels.
    """
    pixel_mask = F.interpolate(masks[:, None].float(), size=pixel_values.shape[-2:], mode="nearest").bool()
    return pixel_values.masked_fill(pixel_mask.to(pixel_values.device), fill)


def _scores(explanation, classes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(B,)`` logit of ``classes`` and ``(B, N)`` each concept's contribution to it (``None`` if unknown)."""
    logits = explanation.logits.float().gather(1, classes[:, None])[:, 0]
    per_class = explanation.class_contributions
    if per_class is None:
        return logits, None
    contributions = per_class.float().gather(1, classes[:, None, None].expand(-1, 1, per_class.shape[-1]))[:, 0]
    return logits, contributions


@torch.no_grad()
def deletion_curves(
    explain: Callable[[torch.Tensor], object],
    pixel_values: torch.Tensor,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    random_repeats: int = 1,
    fill: float = 0.0,
    generator: torch.Generator | None = None,
) -> dict[str, list[list[float]]]:
    """Drops of the predicted class's logit (and of each concept's contribution to it) when each map's top patches
    are deleted, and when as many random patches are deleted, one row per (image, map).

    Args:
        explain: ``pixel_values -> Explanation`` with ``maps`` (e.g. ``model.explain`` of IVPT or VPT-deep).
        pixel_values: ``(B, 3, S, S)`` normalised model inputs.
        fractions: shares of the patch grid deleted, one curve point each.
        random_repeats: random deletions averaged per point.
        fill: value written into deleted pixels (0: the dataset's mean colour in normalised inputs).

    Returns:
        ``B * N`` rows (image-major) of ``len(fractions)`` drops each, under ``concept_logit_drops``,
        ``random_logit_drops``, ``concept_contribution_drops`` and ``random_contribution_drops`` (NaN when the
        explanation has no ``class_contributions``): the inputs of the ``deletion_faithfulness`` metric.
    """
    intact = explain(pixel_values)
    if intact.maps is None:
        raise ValueError("deletion_curves needs explanations with `maps`; this method's explanation has none.")
    classes = intact.predictions
    logits, contributions = _scores(intact, classes)
    batch, num_maps, *grid = intact.maps.shape
    curves = {"concept_logit": [], "random_logit": [], "concept_contribution": [], "random_contribution": []}
    for fraction in fractions:
        concept_masks = top_patch_masks(intact.maps.float(), fraction)  # (B, N, h, w)
        logit_drops, contribution_drops = [], []
        for n in range(num_maps):
            deleted = delete_patches(pixel_values, concept_masks[:, n], fill)
            after_logits, after_contributions = _scores(explain(deleted), classes)
            logit_drops.append(logits - after_logits)
            if contributions is not None:
                contribution_drops.append(contributions[:, n] - after_contributions[:, n])
        random_logit, random_contribution = 0.0, 0.0
        for _ in range(random_repeats):
            masks = random_patch_masks(batch, tuple(grid), fraction, generator)
            after_logits, after_contributions = _scores(explain(delete_patches(pixel_values, masks, fill)), classes)
            random_logit = random_logit + (logits - after_logits) / random_repeats
            if contributions is not None:
                random_contribution = random_contribution + (contributions - after_contributions) / random_repeats
        curves["concept_logit"].append(torch.stack(logit_drops, dim=1))  # (B, N)
        curves["random_logit"].append(random_logit[:, None].expand(-1, num_maps))
        if contributions is not None:
            curves["concept_contribution"].append(torch.stack(contribution_drops, dim=1))
            curves["random_contribution"].append(random_contribution)
    if contributions is None:  # no contributions to follow: NaN rows (the metric reports NaN for them)
        nan = torch.full((batch, num_maps), float("nan"))
        curves["concept_contribution"] = curves["random_contribution"] = [nan] * len(fractions)
    return {
        f"{name}_drops": torch.stack([p.cpu() for p in points], dim=-1).flatten(0, 1).tolist()  # (B * N, F)
        for name, points in curves.items()
    }
