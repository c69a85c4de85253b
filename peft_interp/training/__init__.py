"""Training, evaluation and explanation on top of Accelerate and ``datasets``.

* :class:`InterpTrainer` / :class:`TrainingArguments` — the training loop for every method, with atomic
  checkpoints and exact resume (:mod:`.checkpoint`);
* :mod:`.data` — loading, checking and few-shot / base-to-novel splitting of image datasets;
* :func:`compute_metrics` / :func:`logits_only` — accuracy with the stock ``transformers.Trainer``
  (:mod:`.hf_trainer`).
"""

from .data import (
    Columns,
    ImageCollator,
    ImageTransform,
    base_novel_classes,
    few_shot,
    load_image_dataset,
)
from .hf_trainer import compute_metrics, logits_only
from .trainer import InterpTrainer, TrainerState, TrainingArguments, TrainOutput

__all__ = [
    "Columns",
    "ImageCollator",
    "ImageTransform",
    "InterpTrainer",
    "TrainOutput",
    "TrainerState",
    "TrainingArguments",
    "base_novel_classes",
    "compute_metrics",
    "few_shot",
    "load_image_dataset",
    "logits_only",
]
