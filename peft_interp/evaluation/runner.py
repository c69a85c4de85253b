"""Run a trained adapter over a dataset and score it with the packaged ``evaluate`` metrics
(:func:`peft_interp.evaluation.load_metric`).

* :func:`evaluate_accuracy` — top-1 accuracy over the adapter's classes;
* :func:`evaluate_base_to_novel` — CLIP methods: accuracy on the base classes, then on the novel classes after
  ``set_class_names(novel)`` (no retraining), and their harmonic mean;
* :func:`evaluate_parts` — visual methods with prototype maps (``tuner.prototype_maps``): EvalProtoPNet part
  consistency and stability from ground-truth keypoints, and concept-map alignment with ground-truth part masks
  (datasets with ``keypoints`` / ``keypoints_visible`` / ``part_masks`` columns, like ConceptWorld).
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from ..training.data import ImageCollator, to_device
from . import load_metric
from .parts import part_mass, part_vectors, scaled_box_half_size, stability_noise


def _batches(dataset, batch_size: int, desc: str):
    for start in tqdm(range(0, len(dataset), batch_size), desc=desc, unit="batch", leave=False):
        yield dataset.select(range(start, min(start + batch_size, len(dataset))))


def _inputs(rows, collator: ImageCollator, device) -> dict:
    rows = rows.select_columns(collator.column_names())  # decode only what the model needs
    return to_device(collator([rows[i] for i in range(len(rows))]), device)


@torch.no_grad()
def predict(model, dataset, collator: ImageCollator, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """``(predictions (N,), labels (N,))`` of ``model`` in eval mode."""
    model.eval()
    device = next(model.parameters()).device
    predictions, labels = [], []
    for rows in _batches(dataset, batch_size, "predicting"):
        batch = _inputs(rows, collator, device)
        labels.append(batch.pop("labels").cpu().numpy())
        batch.pop("attributes", None)  # attribute labels are a training signal, not an input at test time
        predictions.append(model(**batch).logits.argmax(dim=-1).cpu().numpy())
    return np.concatenate(predictions), np.concatenate(labels)


def evaluate_accuracy(model, dataset, collator: ImageCollator, batch_size: int = 64) -> dict:
    predictions, labels = predict(model, dataset, collator, batch_size)
    return load_metric("accuracy").compute(predictions=predictions, references=labels)


def evaluate_base_to_novel(
    model, base_dataset, novel_dataset, novel_class_names: list[str], collator: ImageCollator, batch_size: int = 64
) -> dict:
    """``{"base", "novel", "hm"}``: each split is its own n-way problem over its class names."""
    tuner = model.base_model
    base_names = list(tuner.peft_config[tuner.active_adapters[0]].class_names)
    base_predictions, base_labels = predict(model, base_dataset, collator, batch_size)
    tuner.set_class_names(novel_class_names)
    try:
        novel_predictions, novel_labels = predict(model, novel_dataset, collator, batch_size)
    finally:
        tuner.set_class_names(base_names)
    return load_metric("base_novel_accuracy").compute(
        predictions=np.concatenate([base_predictions, novel_predictions]),
        references=np.concatenate([base_labels, novel_labels]),
        splits=["base"] * len(base_labels) + ["novel"] * len(novel_labels),
    )


@torch.no_grad()
def evaluate_parts(
    model,
    dataset,
    collator: ImageCollator,
    batch_size: int = 64,
    noise_seed: int = 0,
    part_names: list[str] | None = None,
) -> dict:
    """Accuracy, part consistency and stability (EvalProtoPNet) and concept alignment of a visual method, from two
    forward passes per batch (clean and noisy) of ``tuner.part_maps``. Concept alignment is left out when the
    dataset has no ``part_masks`` column (CUB has keypoints only).

    The keypoint frame is the model's input (``S x S``, keypoints in its pixels) and the box half-size is the
    protocol's 36 px at 224 scaled to ``S`` (:func:`~peft_interp.evaluation.scaled_box_half_size`).
    """
    tuner = model.base_model
    if not hasattr(tuner, "part_maps"):
        raise TypeError(f"{type(tuner).__name__} has no prototype maps to score (IVPT and VPT-deep have)")
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(noise_seed)
    has_masks = "part_masks" in dataset.column_names  # concept alignment needs part masks (ConceptWorld; not CUB)
    names = ("accuracy", "part_consistency", "part_stability") + (("concept_alignment",) if has_masks else ())
    metrics = {name: load_metric(name) for name in names}
    for rows in _batches(dataset, batch_size, "scoring parts"):
        batch = _inputs(rows, collator, device)
        annotation_columns = ["keypoints", "keypoints_visible"] + (["part_masks"] if has_masks else [])
        annotations = rows.select_columns(annotation_columns).with_format("torch")[:]
        keypoints, visible = annotations["keypoints"], annotations["keypoints_visible"].bool()
        frame = batch["pixel_values"].shape[-1]
        labels = batch["labels"].tolist()

        box = scaled_box_half_size(frame)
        clean = tuner.part_maps(batch["pixel_values"])
        noisy = tuner.part_maps(stability_noise(batch["pixel_values"], generator=generator))
        clean_vectors = part_vectors(clean.prototype_maps.float().cpu(), keypoints, visible, frame, box).tolist()
        noisy_vectors = part_vectors(noisy.prototype_maps.float().cpu(), keypoints, visible, frame, box).tolist()
        metrics["accuracy"].add_batch(predictions=clean.logits.argmax(dim=-1).tolist(), references=labels)
        metrics["part_consistency"].add_batch(part_vectors=clean_vectors, labels=labels, part_visible=visible.tolist())
        metrics["part_stability"].add_batch(
            part_vectors=clean_vectors, noisy_part_vectors=noisy_vectors, labels=labels
        )
        if has_masks:
            mass = part_mass(clean.concept_maps.float().cpu(), annotations["part_masks"].long(), keypoints.shape[1])
            metrics["concept_alignment"].add_batch(part_mass=mass.tolist())
    results = {}
    for name, metric in metrics.items():
        results.update(metric.compute(part_names=part_names) if name == "concept_alignment" else metric.compute())
    return results
