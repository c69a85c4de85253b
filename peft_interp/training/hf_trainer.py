"""Helpers for training and evaluating peft-interp models with the stock ``transformers.Trainer``.

A :class:`~peft_interp.PeftModelForInterpretability` works with the Trainer's defaults: the input columns and the
label names (``labels``) come from the tuner's forward, so ``trainer.evaluate()`` reports ``eval_loss``. Add
:func:`compute_metrics` for ``eval_accuracy``, and :func:`logits_only` so that evaluation keeps only the logits of
each batch (not the method's embeddings, maps and loss terms)::

    trainer = Trainer(model, args, train_dataset=train, eval_dataset=test, compute_metrics=compute_metrics,
                      preprocess_logits_for_metrics=logits_only)
    trainer.evaluate()  # {"eval_loss": ..., "eval_accuracy": ..., ...}
"""

from __future__ import annotations

import numpy as np
import torch


def logits_only(predictions, labels: torch.Tensor) -> torch.Tensor:
    """``preprocess_logits_for_metrics``: the ``(B, C)`` logits of a batch's outputs (the Trainer hands over every
    output but the loss, logits first)."""
    return predictions[0] if isinstance(predictions, (tuple, list)) else predictions


def compute_metrics(eval_prediction) -> dict[str, float]:
    """``compute_metrics`` of ``transformers.Trainer``: top-1 ``accuracy`` (a fraction) of the logits against the
    labels (logits first when the predictions hold more outputs)."""
    logits = logits_only(eval_prediction.predictions, None)
    labels = np.asarray(eval_prediction.label_ids)
    if isinstance(labels, tuple) or labels.ndim != 1:
        raise ValueError(f"compute_metrics expects one (N,) label array, got shape {labels.shape}.")
    return {"accuracy": float((np.asarray(logits).argmax(axis=-1) == labels).mean())}
