"""Evaluation: accuracy and interpretability metrics as Hugging Face ``evaluate`` metrics, shipped in the package.

``load_metric(name)`` loads one of :data:`METRIC_NAMES` from its script under ``metrics/<name>/<name>.py`` (a local
path, so it works offline). Each supports ``add_batch`` / ``compute``:

* ``accuracy`` — top-1 accuracy, ``{"accuracy"}`` in percent [0, 100] (every accuracy-like figure of
  peft_interp is a percentage).
* ``base_novel_accuracy`` — accuracy on base and novel classes (each its own n-way problem) and their harmonic
  mean ``2BN / (B + N)`` (0 when both are 0): ``{"base", "novel", "hm"}``, in percent.
* ``part_consistency`` — EvalProtoPNet consistency (Huang et al. 2023, "Evaluation and Improvement of
  Interpretability for Self-Explainable Part-Prototype Networks", code hqhQAQ/EvalProtoPNet): for every (class c,
  prototype j) unit, the frequency of each part in j's part vectors over the class-c images, divided by the number
  of those images where the part is visible; the unit is consistent if some part reaches 0.8. ``{"consistency"}``
  = 100 x share of consistent units. IVPT scores its 10 foreground prototypes (11-prototype level) within each of
  the 200 CUB classes: 2000 units.
* ``part_stability`` — EvalProtoPNet stability: for every unit, the share of class-c images whose part vector is
  unchanged when noise N(0, 0.2) clipped to +-0.25 is added to the normalised input; ``{"stability"}`` = 100 x
  the mean over units.
* ``concept_alignment`` — peft_interp's own: each concept is assigned the ground-truth part holding the largest
  mean share of its map's mass; ``{"alignment"}`` = 100 x the mean of those shares over concepts.
* ``deletion_faithfulness`` — peft_interp's own, after RISE's deletion curves (Petsiuk et al. 2018): deleting the
  patches a concept map marks must lower the predicted class's logit (and the concept's contribution) more than
  deleting as many random patches; mean drop over the curve and win rate in percent. Curves come from
  :func:`deletion_curves`.

The part metrics take per-image inputs built with :func:`part_vectors` (from activation maps and the keypoints of
:func:`read_cub_parts` mapped by :func:`crop_keypoints`), :func:`stability_noise` and :func:`part_mass`.

Protocol (EvalProtoPNet, as run by IVPT's authors): crop each CUB test image to its ground-truth box, resize to
the model's input size, normalise; upsample each prototype's map bicubically into a 224 x 224 keypoint frame; the
box of half-size 36 px around its first row-major maximum selects the visible keypoints it covers.

:mod:`peft_interp.evaluation.runner` runs a trained adapter over a dataset and scores it with these metrics
(``evaluate_accuracy``, ``evaluate_base_to_novel``, ``evaluate_parts``; imported on its own).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .cub import CUBParts, crop_keypoints, read_cub_parts
from .deletion import DEFAULT_FRACTIONS, delete_patches, deletion_curves, random_patch_masks, top_patch_masks
from .parts import (
    BOX_HALF_SIZE,
    FRAME_SIZE,
    part_mass,
    part_vectors,
    peak_positions,
    scaled_box_half_size,
    stability_noise,
)

if TYPE_CHECKING:
    import evaluate

METRICS_DIR = Path(__file__).resolve().parent / "metrics"
METRIC_NAMES = (
    "accuracy", "base_novel_accuracy", "part_consistency", "part_stability", "concept_alignment",
    "deletion_faithfulness",
)  # fmt: skip


def metric_path(name: str) -> Path:
    """Folder of metric ``name``'s script (``metrics/<name>/<name>.py``)."""
    if name not in METRIC_NAMES:
        raise ValueError(f"unknown metric {name!r}; valid names: {', '.join(METRIC_NAMES)}")
    return METRICS_DIR / name


def load_metric(name: str, **load_kwargs) -> evaluate.EvaluationModule:
    """``evaluate.load`` of the packaged metric ``name`` (one of :data:`METRIC_NAMES`); works offline.

    ``load_kwargs`` go to ``evaluate.load`` (e.g. ``keep_in_memory=True``, ``experiment_id``, ``num_process``).
    """
    import evaluate

    return evaluate.load(str(metric_path(name)), **load_kwargs)


__all__ = [
    "BOX_HALF_SIZE",
    "DEFAULT_FRACTIONS",
    "FRAME_SIZE",
    "METRICS_DIR",
    "METRIC_NAMES",
    "CUBParts",
    "crop_keypoints",
    "delete_patches",
    "deletion_curves",
    "load_metric",
    "metric_path",
    "part_mass",
    "part_vectors",
    "peak_positions",
    "random_patch_masks",
    "read_cub_parts",
    "scaled_box_half_size",
    "stability_noise",
    "top_patch_masks",
]
