"""Can the explanations be trusted? Concept naming and deletion faithfulness of IVPT vs VPT-deep on ConceptWorld.

    python benchmarks/explanations_conceptworld.py [--steps 200] [--seed 0] [--test-per-class 5]

On the shipped DINOv2 backbone, IVPT and VPT-deep are trained as in ``peft-interp demo`` (the trainer, IVPT's recipe,
16 images per base class), then:

* **naming** (:func:`peft_interp.name_concepts`): each concept map is named after the ground-truth part holding the
  largest mean share of its mass on the training images; *naming accuracy* = percentage of (held-out image, concept)
  pairs whose map puts its largest share on the named part, next to the *one-name baseline* (naming every concept
  after the part most maps land on); *named share* = mean share of the map's mass on that part in held-out images
  (100: all of it). VPT-deep's maps are its prompt-token similarity maps;
* **deletion** (:func:`peft_interp.evaluation.deletion_curves` and the ``deletion_faithfulness`` metric): each map's
  top 10 / 25 / 50 % patches are deleted (mean colour) and the drop of the predicted class's logit (IVPT also: of the
  concept's own contribution) is compared with deleting as many random patches; AUC = mean drop over the curve in
  logit units, win rate = percentage of (image, map) pairs where the map's deletion hurts more.

Prints a Markdown table (and the names). About 2-4 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import time

import torch

from peft_interp import name_concepts
from peft_interp.pipeline import image_transform, method_config
from peft_interp.data import PART_NAMES, class_names, load_conceptworld
from peft_interp.evaluation import DEFAULT_FRACTIONS, deletion_curves, load_metric, part_mass
from peft_interp.shipped import load_default
from peft_interp.naming import concept_maps, naming_accuracy
from peft_interp.training import ImageCollator, InterpTrainer, TrainingArguments

METHODS = {"IVPT": "ivpt", "VPT-deep": "vpt_deep"}


def pixels_and_masks(dataset, transform) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(I, 3, S, S)`` model inputs, ``(I, S, S)`` part masks and ``(I,)`` labels of a ConceptWorld split."""
    collator = ImageCollator(transform)
    rows = dataset.select_columns(["image", "label"])
    batch = collator([rows[i] for i in range(len(rows))])
    masks = dataset.select_columns(["part_masks"]).with_format("torch")[:]["part_masks"].long()
    return batch["pixel_values"], masks, batch["labels"]


def train(method: str, names: list[str], train_rows, transform, steps: int, seed: int, output_dir: str):
    from peft import get_peft_model

    torch.manual_seed(seed)
    model = get_peft_model(load_default("dinov2"), method_config(method, names, {"image_size": transform.image_size}))
    args = TrainingArguments(output_dir, max_steps=steps, batch_size=32, seed=seed, logging_steps=10_000,
                             report_to=None, overwrite_output_dir=True)  # fmt: skip
    InterpTrainer(model, args, train_rows.select_columns(["image", "label"]), ImageCollator(transform)).train()
    return model.eval()


def measure(model, train_pixels, train_masks, test_pixels, test_masks, seed: int) -> dict:
    naming = name_concepts(model, train_pixels, part_masks=train_masks, part_names=PART_NAMES)
    held_out = part_mass(concept_maps(model, test_pixels), test_masks, len(PART_NAMES))  # (I, N, K)
    named = torch.tensor([PART_NAMES.index(label) for label in naming.labels])
    named_share = held_out.gather(2, named[None, :, None].expand(len(held_out), -1, 1)).mean().item()
    with torch.no_grad():
        curves = deletion_curves(model.base_model.explain, test_pixels, DEFAULT_FRACTIONS, random_repeats=2,
                                 generator=torch.Generator().manual_seed(seed))  # fmt: skip
    deletion = load_metric("deletion_faithfulness").compute(**curves, fractions=list(DEFAULT_FRACTIONS))
    largest = held_out.argmax(dim=-1)  # (I, N): the part holding most of each map's mass
    majority = max((largest == k).float().mean().item() for k in range(len(PART_NAMES)))
    return {
        "names": naming.names,
        "naming accuracy": naming_accuracy(held_out, naming, PART_NAMES),
        "majority part": 100 * majority,
        "named share": 100 * named_share,
        **deletion,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test-per-class", type=int, default=5)
    parser.add_argument("--output-dir", default="/tmp/peft_interp_explanations_benchmark")
    args = parser.parse_args()
    start = time.perf_counter()
    torch.set_num_threads(2)
    transform = image_transform(load_default("dinov2"))
    names = class_names("base_train")
    train_rows = load_conceptworld("base_train", seed=args.seed, image_size=transform.image_size, shots=16)
    test_rows = load_conceptworld("base_test", seed=1000 + args.seed, image_size=transform.image_size,
                                  num_images=args.test_per_class * len(names))  # fmt: skip
    train_pixels, train_masks, _ = pixels_and_masks(train_rows, transform)
    test_pixels, test_masks, test_labels = pixels_and_masks(test_rows, transform)

    results = {}
    for label, method in METHODS.items():
        model = train(method, names, train_rows, transform, args.steps, args.seed, f"{args.output_dir}/{method}")
        result = measure(model, train_pixels, train_masks, test_pixels, test_masks, args.seed)
        with torch.no_grad():
            predictions = model.base_model.explain(test_pixels).predictions
        result["accuracy"] = 100 * (predictions == test_labels).float().mean().item()
        results[label] = result

    print(f"\nConceptWorld base classes, shipped DINOv2, {args.steps} steps, seed {args.seed}; "
          f"{len(train_pixels)} naming images, {len(test_pixels)} held-out images; deletion fractions "
          f"{', '.join(f'{100 * f:.0f}%' for f in DEFAULT_FRACTIONS)}\n")  # fmt: skip
    columns = [
        ("accuracy", "acc %"), ("naming accuracy", "naming acc %"), ("majority part", "one-name baseline %"),
        ("named share", "named-part share %"),
        ("concept_logit_auc", "logit drop: map"), ("random_logit_auc", "logit drop: random"),
        ("logit_win_rate", "logit win %"), ("concept_contribution_auc", "contribution drop: map"),
        ("random_contribution_auc", "contribution drop: random"), ("contribution_win_rate", "contribution win %"),
    ]  # fmt: skip
    print("| method | " + " | ".join(title for _, title in columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for label, result in results.items():
        cells = ["—" if result[key] != result[key] else f"{result[key]:.1f}" if "%" in title else f"{result[key]:.2f}"
                 for key, title in columns]  # fmt: skip
        print(f"| {label} | " + " | ".join(cells) + " |")
    for label, result in results.items():
        print(f"\n{label} names: {', '.join(result['names'])}")
    print(f"\n({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
