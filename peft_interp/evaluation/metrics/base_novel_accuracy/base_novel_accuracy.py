"""Base-to-novel generalisation accuracy (CoCoOp protocol): accuracy on base and novel classes and their harmonic mean.

Each split is its own n-way problem (base images classified among base classes only, novel images among novel
classes only), so ``predictions`` must already have been made within the split of each example.
"""

import math

import datasets
import evaluate
import numpy as np

SPLITS = ("base", "novel")

_DESCRIPTION = """
Base-to-novel accuracy (Zhou et al. 2022, "Conditional Prompt Learning for Vision-Language Models"):
the top-1 accuracy on the examples of the base split, on the examples of the novel split, and their harmonic mean
HM = 2 * base * novel / (base + novel) (HM = 0 when both accuracies are 0). Each split is a separate n-way
problem: the prediction of a base example is made among the base classes only, of a novel one among the novel
classes only. Accuracies are percentages in [0, 100]. A split with no example gets NaN (and so does HM).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[int]`): predicted class index of each example, within its split's classes.
    references (`list[int]`): ground-truth class index of each example, within its split's classes.
    splits (`list[str]`): "base" or "novel", the split of each example.

Returns:
    base (`float`): accuracy on the base examples in percent, in [0, 100].
    novel (`float`): accuracy on the novel examples in percent, in [0, 100].
    hm (`float`): harmonic mean of the two.

Examples:
    >>> metric = peft_interp.evaluation.load_metric("base_novel_accuracy")
    >>> metric.compute(predictions=[0, 1, 0, 0], references=[0, 1, 1, 0], splits=["base", "base", "novel", "novel"])
    {'base': 100.0, 'novel': 50.0, 'hm': 66.66666666666667}
"""

_CITATION = """
@inproceedings{zhou2022cocoop,
  title = {Conditional Prompt Learning for Vision-Language Models},
  author = {Zhou, Kaiyang and Yang, Jingkang and Loy, Chen Change and Liu, Ziwei},
  booktitle = {CVPR},
  year = {2022}
}
"""


def harmonic_mean(base: float, novel: float) -> float:
    if math.isnan(base) or math.isnan(novel):
        return math.nan
    if base + novel == 0:
        return 0.0
    return 2 * base * novel / (base + novel)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class BaseNovelAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("int64"),
                    "references": datasets.Value("int64"),
                    "splits": datasets.Value("string"),
                }
            ),
        )

    def _compute(self, predictions, references, splits):
        correct = np.asarray(predictions, dtype=np.int64) == np.asarray(references, dtype=np.int64)  # (N,)
        split_of_example = np.asarray(splits, dtype=object)  # (N,)
        unknown = sorted(set(split_of_example.tolist()) - set(SPLITS))
        if unknown:
            raise ValueError(f"splits must be 'base' or 'novel', got {unknown}")
        accuracy = {}
        for split in SPLITS:
            in_split = split_of_example == split
            accuracy[split] = 100.0 * float(correct[in_split].mean()) if in_split.any() else math.nan
        base, novel = accuracy["base"], accuracy["novel"]
        return {"base": base, "novel": novel, "hm": harmonic_mean(base, novel)}
