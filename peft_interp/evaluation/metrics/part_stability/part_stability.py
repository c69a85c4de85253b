"""Part stability of part-prototypes under input noise (EvalProtoPNet protocol, Huang et al. 2023).

A unit is a (class c, prototype j) pair; its stability is the share of class-c images whose part vector for
prototype j is the same with and without noise on the input. Score = 100 x the mean over units.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """
Part stability (Huang et al. 2023, "Evaluation and Improvement of Interpretability for Self-Explainable
Part-Prototype Networks", code hqhQAQ/EvalProtoPNet), the protocol IVPT reports on CUB-200-2011.

Part vectors are computed twice per image (see peft_interp.evaluation.part_vectors): on the clean input and on the
input with noise N(0, 0.2) clipped to +-0.25 added after normalisation (peft_interp.evaluation.stability_noise).
For every class c present in `labels` and every prototype j (a "unit"):

    stability[c, j] = (number of class-c images i with noisy_part_vectors[i][j] == part_vectors[i][j], all parts
                       equal) / (number of class-c images)

stability = 100 * mean over units of stability[c, j], units = classes present x prototypes.
"""

_KWARGS_DESCRIPTION = """
Args:
    part_vectors (`list[list[list[int]]]`): one P x K 0/1 matrix per image, from the clean input.
    noisy_part_vectors (`list[list[list[int]]]`): the same from the noisy input.
    labels (`list[int]`): class of each image.

Returns:
    stability (`float`): mean percentage of unchanged part vectors over (class, prototype) units, in [0, 100].
    num_units (`int`): number of units, (classes present) x P.

Examples:
    >>> metric = peft_interp.evaluation.load_metric("part_stability")
    >>> metric.compute(part_vectors=[[[1, 0]], [[1, 0]]], noisy_part_vectors=[[[1, 0]], [[0, 1]]], labels=[0, 0])
    {'stability': 50.0, 'num_units': 1}
"""

_CITATION = """
@inproceedings{huang2023evaluation,
  title = {Evaluation and Improvement of Interpretability for Self-Explainable Part-Prototype Networks},
  author = {Huang, Qihan and Xue, Mengqi and Huang, Wenqi and Zhang, Haofei and Song, Jie and Jing, Yongcheng
            and Song, Mingli},
  booktitle = {ICCV},
  year = {2023}
}
"""


def unchanged_share_per_unit(unchanged: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(C, P) share of each present class's images whose part vector is unchanged; unchanged (N, P) bool."""
    classes = np.unique(labels)
    images_of_class = (labels[None, :] == classes[:, None]).astype(np.float64)  # (C, N)
    return (images_of_class @ unchanged.astype(np.float64)) / images_of_class.sum(axis=1, keepdims=True)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class PartStability(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "part_vectors": datasets.Sequence(datasets.Sequence(datasets.Value("int32"))),
                    "noisy_part_vectors": datasets.Sequence(datasets.Sequence(datasets.Value("int32"))),
                    "labels": datasets.Value("int64"),
                }
            ),
            reference_urls=["https://github.com/hqhQAQ/EvalProtoPNet"],
        )

    def _compute(self, part_vectors, noisy_part_vectors, labels):
        clean = np.asarray(part_vectors, dtype=np.int64)  # (N, P, K)
        noisy = np.asarray(noisy_part_vectors, dtype=np.int64)  # (N, P, K)
        image_labels = np.asarray(labels, dtype=np.int64)  # (N,)
        if clean.ndim != 3 or noisy.shape != clean.shape or image_labels.shape != clean.shape[:1]:
            raise ValueError(
                f"got part_vectors {clean.shape}, noisy_part_vectors {noisy.shape}, labels {image_labels.shape}; "
                "expected (N, P, K), (N, P, K), (N,)"
            )
        unchanged = (clean == noisy).all(axis=-1)  # (N, P)
        per_unit = unchanged_share_per_unit(unchanged, image_labels)  # (C, P)
        return {"stability": 100.0 * float(per_unit.mean()), "num_units": int(per_unit.size)}
