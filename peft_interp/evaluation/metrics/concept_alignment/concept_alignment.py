"""Concept-to-part alignment against ground-truth part masks (peft_interp's own definition).

Each concept map is matched to the ground-truth part that holds, on average over images, the largest share of its
mass; the concept's alignment is that average share. Score = 100 x the mean over concepts.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """
Concept alignment with ground-truth part masks (defined by peft_interp; not from a paper).

Input per image: part_mass[i][p][k] = the fraction of concept p's (non-negative, sum-normalised) map that falls
inside ground-truth part k's mask (see peft_interp.evaluation.part_mass); each row sums to <= 1, the rest lying
on the background. Then, for every concept p:

    mean_mass[p, k]    = mean over images i of part_mass[i][p][k]
    assigned_part[p]   = argmax_k mean_mass[p, k]            (the first part on ties)
    alignment[p]       = mean_mass[p, assigned_part[p]]       (in [0, 1])

alignment = 100 * mean over concepts of alignment[p]. A concept scores 1 when every image puts all its mass on one
and the same part; a concept spread evenly over K parts scores at most 1/K; mass on the background lowers it.
Unlike consistency, one part may be assigned to several concepts.
"""

_KWARGS_DESCRIPTION = """
Args:
    part_mass (`list[list[list[float]]]`): one P x K matrix per image (P concepts, K ground-truth parts), the
        fraction of each concept map's mass inside each part mask.
    part_names (`list[str]`, optional): the K part names; when given, the result also has `assigned_part_names`.

Returns:
    alignment (`float`): 100 x mean over concepts of the mass share on the assigned part, in [0, 100].
    per_concept (`list[float]`): P shares in [0, 1], the mean mass of each concept on its assigned part.
    assigned_parts (`list[int]`): P part indices (0-based, into the K parts).
    assigned_part_names (`list[str]`): the names of the assigned parts, only when `part_names` is given.

Examples:
    >>> metric = peft_interp.evaluation.load_metric("concept_alignment")
    >>> metric.compute(part_mass=[[[0.75, 0.25]], [[0.25, 0.25]]], part_names=["head", "wing"])
    {'alignment': 50.0, 'per_concept': [0.5], 'assigned_parts': [0], 'assigned_part_names': ['head']}
"""

_CITATION = """
@misc{peft_interp_concept_alignment,
  title = {peft-interp: interpretable prompt tuning as PEFT tuners},
  note = {concept-to-part alignment with ground-truth part masks, defined in peft_interp.evaluation}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ConceptAlignment(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"part_mass": datasets.Sequence(datasets.Sequence(datasets.Value("float64")))}),
        )

    def _compute(self, part_mass, part_names=None):
        mass = np.asarray(part_mass, dtype=np.float64)  # (N, P, K)
        if mass.ndim != 3 or mass.shape[0] == 0:
            raise ValueError(f"part_mass must be one P x K matrix per image (same P, K), got shape {mass.shape}")
        mean_mass = mass.mean(axis=0)  # (P, K)
        assigned_parts = mean_mass.argmax(axis=1)  # (P,), first maximum on ties
        per_concept = mean_mass[np.arange(mean_mass.shape[0]), assigned_parts]  # (P,)
        result = {
            "alignment": 100.0 * float(per_concept.mean()),
            "per_concept": per_concept.tolist(),
            "assigned_parts": assigned_parts.tolist(),
        }
        if part_names is not None:
            if len(part_names) != mass.shape[2]:
                raise ValueError(f"got {len(part_names)} part_names for {mass.shape[2]} parts")
            result["assigned_part_names"] = [part_names[k] for k in result["assigned_parts"]]
        return result
