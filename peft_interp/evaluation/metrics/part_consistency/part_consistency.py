"""Part consistency of part-prototypes (EvalProtoPNet protocol, Huang et al. 2023).

A unit is a (class c, prototype j) pair. For the images of class c, count how often prototype j's part vector
marks each object part, divide by the number of class-c images in which that part is visible, and call the unit
consistent if some part reaches the threshold frequency. Score = 100 x the share of consistent units.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """
Part consistency (Huang et al. 2023, "Evaluation and Improvement of Interpretability for Self-Explainable
Part-Prototype Networks", code hqhQAQ/EvalProtoPNet), the protocol IVPT reports on CUB-200-2011.

Inputs are per-image part vectors: part_vectors[i][j][k] = 1 when the box around prototype j's activation peak in
image i contains the visible keypoint of object part k (see peft_interp.evaluation.part_vectors). For every class c
present in `labels` and every prototype j (a "unit"):

    frequency[k] = sum over class-c images i of part_vectors[i][j][k] / (number of class-c images where part k is
                   visible)                      (0 when part k is visible in no image of class c)
    consistent   = any_k frequency[k] >= threshold      (the threshold itself counts)

consistency = 100 * (number of consistent units) / (number of units), units = classes present x prototypes.
A part vector may only mark a part that is visible in its image. Prototypes shared by all classes (IVPT's
class-agnostic prototypes) are scored within every class; for class-specific prototypes (ProtoPNet), give each
image the part vectors of its own class's prototypes (j = the class's j-th prototype).
"""

_KWARGS_DESCRIPTION = """
Args:
    part_vectors (`list[list[list[int]]]`): one P x K 0/1 matrix per image (P prototypes, K object parts).
    labels (`list[int]`): class of each image.
    part_visible (`list[list[bool]]`): K flags per image, whether each part is visible in it.
    threshold (`float`, default 0.8): a unit is consistent if some part's frequency is >= threshold.

Returns:
    consistency (`float`): percentage of consistent (class, prototype) units, in [0, 100].
    num_units (`int`): number of units, (classes present) x P.

Examples:
    >>> metric = peft_interp.evaluation.load_metric("part_consistency")
    >>> metric.compute(part_vectors=[[[1, 0]], [[1, 0]]], labels=[0, 0], part_visible=[[True, True], [True, False]])
    {'consistency': 100.0, 'num_units': 1}
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


def class_one_hot(labels: np.ndarray) -> np.ndarray:
    """(C, N) float matrix, row c marking the images of the c-th class present in ``labels`` (sorted)."""
    classes = np.unique(labels)
    return (labels[None, :] == classes[:, None]).astype(np.float64)


def consistent_units(part_vectors: np.ndarray, labels: np.ndarray, part_visible: np.ndarray, threshold: float):
    """(C, P) bool: whether each (class present, prototype) unit reaches ``threshold`` on some part.

    part_vectors (N, P, K) in {0, 1}; labels (N,); part_visible (N, K) bool.
    """
    images_of_class = class_one_hot(labels)  # (C, N)
    part_counts = np.einsum("cn,npk->cpk", images_of_class, part_vectors.astype(np.float64))  # (C, P, K)
    visible_counts = images_of_class @ part_visible.astype(np.float64)  # (C, K)
    denominators = np.where(visible_counts > 0, visible_counts, 1.0)[:, None, :]  # (C, 1, K)
    frequencies = np.where(visible_counts[:, None, :] > 0, part_counts / denominators, 0.0)  # (C, P, K)
    return (frequencies >= threshold).any(axis=-1)


def check_inputs(part_vectors: np.ndarray, labels: np.ndarray, part_visible: np.ndarray) -> None:
    if part_vectors.ndim != 3:
        raise ValueError(f"part_vectors must be one P x K matrix per image (same P, K), got shape {part_vectors.shape}")
    if labels.shape != part_vectors.shape[:1] or part_visible.shape != part_vectors.shape[:1] + part_vectors.shape[2:]:
        raise ValueError(
            f"got part_vectors {part_vectors.shape}, labels {labels.shape}, part_visible {part_visible.shape}; "
            "expected (N, P, K), (N,), (N, K)"
        )
    if not np.isin(part_vectors, (0, 1)).all():
        raise ValueError("part_vectors must hold only 0 and 1")
    if (part_vectors.astype(bool) & ~part_visible[:, None, :]).any():
        raise ValueError("a part vector marks a part that is not visible in its image")


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class PartConsistency(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "part_vectors": datasets.Sequence(datasets.Sequence(datasets.Value("int32"))),
                    "labels": datasets.Value("int64"),
                    "part_visible": datasets.Sequence(datasets.Value("bool")),
                }
            ),
            reference_urls=["https://github.com/hqhQAQ/EvalProtoPNet"],
        )

    def _compute(self, part_vectors, labels, part_visible, threshold=0.8):
        vectors = np.asarray(part_vectors, dtype=np.int64)  # (N, P, K)
        image_labels = np.asarray(labels, dtype=np.int64)  # (N,)
        visible = np.asarray(part_visible, dtype=bool)  # (N, K)
        check_inputs(vectors, image_labels, visible)
        consistent = consistent_units(vectors, image_labels, visible, threshold)  # (C, P)
        return {"consistency": 100.0 * float(consistent.mean()), "num_units": int(consistent.size)}
