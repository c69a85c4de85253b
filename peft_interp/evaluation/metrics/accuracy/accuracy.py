"""Top-1 accuracy: the share of predictions equal to their reference label.

Shipped with peft_interp so that it loads offline (the Hub's ``accuracy`` needs a download and scikit-learn).
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """
Top-1 accuracy: the fraction of examples whose predicted class index equals the reference class index,
(number of correct predictions) / (number of examples), in [0, 1].
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[int]`): predicted class index of each example.
    references (`list[int]`): ground-truth class index of each example.

Returns:
    accuracy (`float`): fraction of correct predictions, in [0, 1].

Examples:
    >>> metric = peft_interp.evaluation.load_metric("accuracy")
    >>> metric.compute(predictions=[0, 1, 2, 2], references=[0, 1, 1, 2])
    {'accuracy': 0.75}
"""

_CITATION = """
@misc{peft_interp_accuracy,
  title = {peft-interp: interpretable prompt tuning as PEFT tuners},
  note = {top-1 accuracy, implemented in peft_interp.evaluation}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references):
        predicted = np.asarray(predictions, dtype=np.int64)  # (N,)
        expected = np.asarray(references, dtype=np.int64)  # (N,)
        if predicted.size == 0:
            raise ValueError("accuracy needs at least one example")
        return {"accuracy": float((predicted == expected).mean())}
