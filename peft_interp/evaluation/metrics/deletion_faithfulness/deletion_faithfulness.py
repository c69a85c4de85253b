"""Deletion faithfulness of spatial explanations: deleting what a concept map marks must hurt more than deleting
as much at random (peft_interp's own test, in the spirit of the deletion metric of Petsiuk et al. 2018, RISE).
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """
Deletion faithfulness (defined by peft_interp, after the deletion curves of Petsiuk et al. 2018, "RISE").

Input: one row per (image, concept map), built by peft_interp.evaluation.deletion_curves: for each deleted fraction
f_1 < ... < f_K of the patch grid, the drop of the intact image's predicted-class logit when the map's top patches
are deleted (concept_logit_drops) and when as many random patches are deleted (random_logit_drops); and the
same for the concept's own contribution to that logit (concept_contribution_drops, random_contribution_drops; NaN
rows for methods without per-concept contributions, e.g. VPT-deep, whose contribution results are then NaN).

For every row the curve (0, 0), (f_1, d_1), ..., (f_K, d_K) gives, by the trapezoid rule divided by f_K, the mean
drop over the curve (AUC, in logit units). Then

    concept_logit_auc = mean over rows of the concept curves' AUC     (and random_logit_auc for the random ones)
    logit_win_rate    = 100 * share of rows whose concept AUC is larger than their random AUC

and the same with "contribution" for the contribution drops. A faithful explanation has
concept AUCs well above random ones and a win rate near 100; an explanation unrelated to the decision about 50.
"""

_KWARGS_DESCRIPTION = """
Args:
    concept_logit_drops (`list[list[float]]`): per row, K logit drops after deleting the map's top patches.
    random_logit_drops (`list[list[float]]`): per row, K logit drops after deleting random patches.
    concept_contribution_drops (`list[list[float]]`): per row, K drops of the concept's contribution (NaN: none).
    random_contribution_drops (`list[list[float]]`): the same under random deletion.
    fractions (`list[float]`): the K deleted fractions, increasing, in (0, 1].

Returns:
    concept_logit_auc, random_logit_auc (`float`): mean drop over the curve, logit units.
    logit_win_rate (`float`): percentage of rows where the concept deletion hurts more, in [0, 100].
    concept_contribution_auc, random_contribution_auc, contribution_win_rate: the same for contributions (NaN
        without them).
    num_rows (`int`).

Examples:
    >>> metric = peft_interp.evaluation.load_metric("deletion_faithfulness")
    >>> nan = float("nan")
    >>> result = metric.compute(
    ...     concept_logit_drops=[[2.0, 4.0], [1.0, 1.0]], random_logit_drops=[[1.0, 2.0], [1.0, 2.0]],
    ...     concept_contribution_drops=[[nan, nan]] * 2, random_contribution_drops=[[nan, nan]] * 2,
    ...     fractions=[0.5, 1.0])
    >>> result["concept_logit_auc"], result["random_logit_auc"], result["logit_win_rate"], result["num_rows"]
    (1.375, 1.0, 50.0, 2)
"""

_CITATION = """
@inproceedings{petsiuk2018rise,
  title = {RISE: Randomized Input Sampling for Explanation of Black-box Models},
  author = {Petsiuk, Vitali and Das, Abir and Saenko, Kate},
  booktitle = {BMVC},
  year = {2018}
}
"""

_ROW = datasets.Sequence(datasets.Value("float64"))


def curve_auc(drops: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """``(R, K)`` drops at increasing ``(K,)`` fractions -> ``(R,)`` trapezoid area from (0, 0), divided by f_K."""
    xs = np.concatenate([[0.0], fractions])
    ys = np.concatenate([np.zeros((drops.shape[0], 1)), drops], axis=1)
    return ((ys[:, 1:] + ys[:, :-1]) / 2 * np.diff(xs)).sum(axis=1) / xs[-1]


def known_rows(values: np.ndarray) -> bool:
    return bool((~np.isnan(values)).any())


def _checked(name: str, rows, num_fractions: int) -> np.ndarray:
    array = np.asarray(rows, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != num_fractions:
        raise ValueError(f"{name} must hold one drop per fraction ({num_fractions}) in every row, got {array.shape}")
    return array


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class DeletionFaithfulness(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"concept_logit_drops": _ROW, "random_logit_drops": _ROW, "concept_contribution_drops": _ROW,
                 "random_contribution_drops": _ROW}  # fmt: skip
            ),
        )

    def _compute(
        self, concept_logit_drops, random_logit_drops, concept_contribution_drops, random_contribution_drops, fractions
    ):
        fractions = np.asarray(fractions, dtype=np.float64)
        if fractions.ndim != 1 or not len(fractions) or (np.diff(fractions) <= 0).any() or fractions[0] <= 0:
            raise ValueError(f"fractions must be increasing values in (0, 1], got {fractions.tolist()}")
        result = {}
        pairs = [
            ("logit", concept_logit_drops, random_logit_drops),
            ("contribution", concept_contribution_drops, random_contribution_drops),
        ]
        for name, concept, random in pairs:
            concept_auc = curve_auc(_checked(f"concept_{name}_drops", concept, len(fractions)), fractions)
            random_auc = curve_auc(_checked(f"random_{name}_drops", random, len(fractions)), fractions)
            if concept_auc.shape != random_auc.shape or not len(concept_auc):
                raise ValueError(f"concept_{name}_drops and random_{name}_drops need the same, non-zero number of rows")
            result[f"concept_{name}_auc"] = float(np.nanmean(concept_auc)) if known_rows(concept_auc) else np.nan
            result[f"random_{name}_auc"] = float(np.nanmean(random_auc)) if known_rows(random_auc) else np.nan
            known = ~(np.isnan(concept_auc) | np.isnan(random_auc))  # NaN rows: no contributions to follow
            wins = (concept_auc > random_auc)[known]
            result[f"{name}_win_rate"] = 100.0 * float(wins.mean()) if known.any() else np.nan
        result["num_rows"] = int(len(np.asarray(concept_logit_drops)))
        return result
