"""Top-1 accuracy: the percentage of predictions equal to their reference label.

Shipped with peft_interp so that it loads offline (the Hub's ``accuracy`` needs a download and scikit-learn).
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """
Top-1 accuracy in percent: 100 x (number of correct predictions) / (number of examples), in [0, 100]
(peft_interp reports every accuracy-like figure as a percentage, like the part metrics).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[int]`): predicted class index of each example.
    references (`list[int]`): ground-truth class index of each example.

Returns:
    accuracy (`float`): percentage of correct predictions, in [0, 100].

Examples:
    >>> metric = peft_interp.evaluation.load_metric("accuracy")
    >>> metric.compute(predictions=[0, 1, 2, 2], references=[0, 1, 1, 2])
    {'accuracy': 75.0}
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
        return {"accuracy": 100.0 * float((predicted == expected).mean())}
