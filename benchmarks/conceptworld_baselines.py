"""Sanity table of the tiny backbones shipped in `peft_interp/checkpoints/`, on ConceptWorld.

Measured, for the shipped CLIP and DINOv2 (and, as a control, the same architectures with random weights):

* zero-shot CLIP: accuracy on `base_test` and `novel_test` and their harmonic mean (CoOp's base-to-novel protocol),
  with text embeddings of the bare class name and of the prompt "a photo of a {}.";
* linear probe of frozen image features (the CLS token and the mean of the patch tokens of the last layer), trained
  on `--shots`-shot `base_train`, evaluated on `base_test` (50 classes);
* k-NN of the same features (cosine similarity, majority vote, ties to the nearest), k = 1 .. 20;
* per-patch linear probe of the ground-truth part (does the backbone see the parts?): every 8 x 8 patch is
  labelled with the majority part id of its pixels in `part_masks` (0 = background, 1..4 = head, body, wing, tail);
  a linear classifier of the last layer's patch tokens is trained on the patches of the `base_train` images and
  evaluated on those of `base_test`, next to the majority-class baseline (always "background"). Balanced accuracy
  is the mean of the per-part recalls (the baseline's is 20%).

Probes are multinomial logistic regressions on standardised features (full batch, L-BFGS, fixed L2 penalty).
Chance is 2% for every 50-class task. Usage:

    python benchmarks/conceptworld_baselines.py [--shots 16] [--images-per-class 50] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from peft_interp.data import class_names, load_conceptworld
from peft_interp.data.conceptworld import PART_NAMES
from peft_interp.shipped import default_processor, default_tokenizer, load_default, pretraining_info

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: scripts/ is not installed
from scripts.pretrain import patch_part_labels  # noqa: E402


PROMPTS = {"bare class name": "{}", "a photo of a {}.": "a photo of a {}."}
KNN_KS = (1, 3, 5, 10, 20)


# ----------------------------------------------------------------------------------------------------------------
# Data and features
# ----------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def vision_features(model, pixel_values: torch.Tensor, batch_size: int = 500) -> dict[str, torch.Tensor]:
    """Frozen last-layer features of a CLIP vision tower or a DINOv2.

    Returns:
        "cls": `(N, D)` the CLS token (CLIP: after `post_layernorm`, i.e. its `pooler_output`; DINOv2: after its
        final layernorm), "mean": `(N, D)` the mean of the patch tokens, "patches": `(N, num_patches, D)`.
    """
    vision = getattr(model, "vision_model", model)
    num_prefix = 1 + getattr(vision.config, "num_register_tokens", 0)
    outputs = [vision(pixel_values=chunk) for chunk in pixel_values.split(batch_size)]
    hidden = torch.cat([output.last_hidden_state for output in outputs])
    patches = hidden[:, num_prefix:]
    return {"cls": torch.cat([output.pooler_output for output in outputs]), "mean": patches.mean(1), "patches": patches}


# ----------------------------------------------------------------------------------------------------------------
# Zero-shot CLIP
# ----------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def zero_shot_accuracy(
    clip, tokenizer, pixel_values: torch.Tensor, labels: torch.Tensor, names: list[str], prompt: str
) -> float:
    """Top-1 accuracy of classifying images `(N, 3, H, W)` by cosine similarity to the prompted class names."""
    text = tokenizer([prompt.format(name) for name in names], padding=True, return_tensors="pt")
    text_embeds = F.normalize(clip.get_text_features(**text).pooler_output, dim=-1)  # (C, E)
    chunks = pixel_values.split(500)
    image_embeds = torch.cat([clip.get_image_features(pixel_values=chunk).pooler_output for chunk in chunks])
    predictions = (F.normalize(image_embeds, dim=-1) @ text_embeds.T).argmax(-1)  # (N,)
    return (predictions == labels).float().mean().item()


def harmonic_mean(a: float, b: float) -> float:
    return 2 * a * b / (a + b) if a + b > 0 else 0.0


# ----------------------------------------------------------------------------------------------------------------
# Probes
# ----------------------------------------------------------------------------------------------------------------


def standardize(train: torch.Tensor, test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Z-scores both `(N, D)` feature sets with the training set's per-dimension mean and std."""
    mean, std = train.mean(0), train.std(0) + 1e-6
    return (train - mean) / std, (test - mean) / std


def linear_probe(
    train: torch.Tensor,
    train_labels: torch.Tensor,
    test: torch.Tensor,
    num_classes: int,
    l2: float = 1e-3,
    balanced: bool = False,
) -> torch.Tensor:
    """Fits a multinomial logistic regression on `(N, D)` features (full batch, L-BFGS) and returns the predicted
    labels `(M,)` of `test` `(M, D)`. With `balanced`, each class weighs in the loss in inverse proportion to its
    frequency."""
    train, test = standardize(train, test)
    linear = torch.nn.Linear(train.shape[1], num_classes)
    optimizer = torch.optim.LBFGS(
        linear.parameters(), lr=1.0, max_iter=200, history_size=20, line_search_fn="strong_wolfe"
    )
    counts = train_labels.bincount(minlength=num_classes).float()
    class_weights = counts.sum() / (num_classes * counts.clamp(min=1)) if balanced else None

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(linear(train), train_labels, weight=class_weights) + l2 * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return linear(test).argmax(-1)


def knn_accuracies(
    train: torch.Tensor, train_labels: torch.Tensor, test: torch.Tensor, test_labels: torch.Tensor, ks=KNN_KS
) -> dict[int, float]:
    """Accuracy of k-nearest-neighbour classification by cosine similarity, for each k of `ks`: majority vote over
    the k neighbours, ties broken by the summed similarity."""
    similarities = F.normalize(test, dim=-1) @ F.normalize(train, dim=-1).T  # (M, N)
    top_similarities, top_indices = similarities.topk(max(ks), dim=-1)
    num_classes = int(train_labels.max()) + 1
    accuracies = {}
    for k in ks:
        votes = F.one_hot(train_labels[top_indices[:, :k]], num_classes).float()  # (M, k, C)
        scores = votes.sum(1) + 1e-3 * (votes * top_similarities[:, :k, None]).sum(1)
        accuracies[k] = (scores.argmax(-1) == test_labels).float().mean().item()
    return accuracies


def patch_probe(train_patches, train_labels, test_patches, test_labels) -> dict[str, float]:
    """Class-balanced linear probe of the part label of each patch: accuracy, balanced accuracy (mean per-label
    recall), and the majority-class baseline's accuracy."""
    predictions = linear_probe(
        train_patches.flatten(0, 1),
        train_labels.flatten(),
        test_patches.flatten(0, 1),
        num_classes=len(PART_NAMES) + 1,
        balanced=True,
    )
    targets = test_labels.flatten()
    recalls = [(predictions[targets == part] == part).float().mean().item() for part in targets.unique()]
    majority = train_labels.flatten().bincount().argmax()
    return {
        "accuracy": (predictions == targets).float().mean().item(),
        "balanced": float(np.mean(recalls)),
        "majority": (targets == majority).float().mean().item(),
    }


# ----------------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------------


def load_splits(shots: int, images_per_class: int, patch_size: int) -> dict[str, dict]:
    """`base_train` (`shots` images per class, seed 1), `base_test` and `novel_test` (`images_per_class` per
    class), each as `{"dataset", "labels" (N,), "patch_labels" (N, num_patches), "names"}`."""
    datasets = {
        "base_train": load_conceptworld("base_train", shots=shots, seed=1),
        "base_test": load_conceptworld("base_test", shots=images_per_class),
        "novel_test": load_conceptworld("novel_test", shots=images_per_class),
    }
    splits = {}
    for split, dataset in datasets.items():
        part_masks = torch.from_numpy(np.asarray(dataset.with_format("numpy")["part_masks"]))
        splits[split] = {
            "dataset": dataset,
            "labels": torch.tensor(list(dataset["label"])),
            "patch_labels": patch_part_labels(part_masks, patch_size),
            "names": class_names(split),
        }
    return splits


def with_pixel_values(splits: dict[str, dict], processor) -> dict[str, dict]:
    """`splits`, each with its `(N, 3, H, W)` "pixel_values" computed by a backbone's image processor."""
    pixel_values = {
        split: processor(list(contents["dataset"]["image"]), return_tensors="pt").pixel_values
        for split, contents in splits.items()
    }
    return {split: {**contents, "pixel_values": pixel_values[split]} for split, contents in splits.items()}


# ----------------------------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------------------------


def vision_tower(name: str, model):
    """The image encoder of a shipped backbone: CLIP's vision tower, or the DINOv2 itself."""
    return model.vision_model if name == "clip" else model


def random_init_like(name: str, model):
    """The same architecture with fresh random weights (seeded), initialised as `from_config` would: a control."""
    torch.manual_seed(0)
    return vision_tower(name, type(model)(model.config)).eval()


def evaluate_backbone(vision, splits: dict[str, dict]) -> dict:
    """Linear probes, k-NN and part probe of one image encoder."""
    train, test = (vision_features(vision, splits[name]["pixel_values"]) for name in ("base_train", "base_test"))
    train_labels, test_labels = splits["base_train"]["labels"], splits["base_test"]["labels"]
    results = {
        "parts": patch_probe(
            train["patches"], splits["base_train"]["patch_labels"], test["patches"], splits["base_test"]["patch_labels"]
        )
    }
    for pooling in ("cls", "mean"):
        predictions = linear_probe(train[pooling], train_labels, test[pooling], len(splits["base_test"]["names"]))
        results[f"linear {pooling}"] = (predictions == test_labels).float().mean().item()
        results[f"knn {pooling}"] = knn_accuracies(train[pooling], train_labels, test[pooling], test_labels)
    return results


def percent(value: float) -> str:
    return f"{100 * value:.1f}"


def print_zero_shot_table(clip, tokenizer, splits: dict[str, dict]) -> None:
    print("## Zero-shot CLIP (top-1 %, chance 2.0)\n")
    print("| prompt | base_test | novel_test | HM |\n| --- | ---: | ---: | ---: |")
    for label, prompt in PROMPTS.items():
        accuracy = {
            split: zero_shot_accuracy(
                clip, tokenizer, splits[split]["pixel_values"], splits[split]["labels"], splits[split]["names"], prompt
            )
            for split in ("base_test", "novel_test")
        }
        hm = harmonic_mean(accuracy["base_test"], accuracy["novel_test"])
        print(f"| {label} | {percent(accuracy['base_test'])} | {percent(accuracy['novel_test'])} | {percent(hm)} |")


def print_probe_tables(rows: list[tuple[str, dict]], shots: int) -> None:
    print(f"\n## Frozen features, base classes ({shots}-shot base_train -> base_test, top-1 %, chance 2.0)\n")
    knn_header = " | ".join(f"{k}-NN" for k in KNN_KS)
    print(f"| backbone | features | linear | {knn_header} |\n| --- | --- | ---: |" + " ---: |" * len(KNN_KS))
    for label, results in rows:
        for pooling in ("cls", "mean"):
            knn = " | ".join(percent(results[f"knn {pooling}"][k]) for k in KNN_KS)
            print(f"| {label} | {pooling} | {percent(results[f'linear {pooling}'])} | {knn} |")

    print("\n## Per-patch part probe, last layer (labels: background, head, body, wing, tail; %)\n")
    print("| backbone | accuracy | balanced accuracy | majority-class baseline |\n| --- | ---: | ---: | ---: |")
    for label, results in rows:
        parts = results["parts"]
        scores = (parts["accuracy"], parts["balanced"], parts["majority"])
        print(f"| {label} | " + " | ".join(map(percent, scores)) + " |")


def print_pretraining_summary(names) -> None:
    print("\n## Pretraining (from pretraining.json)\n")
    for name in names:
        info = pretraining_info(name)
        seconds = info["wall_clock_seconds"]
        print(
            f"- {name}: {seconds['training'] / 60:.1f} min training (+ {seconds['rendering_images']:.0f} s rendering "
            f"the {info['settings']['num_images']} pretraining images), {info['environment']['torch_threads']} "
            f"thread(s), seed {info['seed']}, {info['num_parameters'] / 1e6:.2f} M parameters"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shots", type=int, default=16, help="base_train images per class for the probes")
    parser.add_argument("--images-per-class", type=int, default=50, help="test images per class")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()

    backbones = {name: load_default(name) for name in ("clip", "dinov2")}
    patch_size = backbones["dinov2"].config.patch_size
    if backbones["clip"].config.vision_config.patch_size != patch_size:
        raise ValueError("the part probe expects both backbones to use the same patch size")
    shared = load_splits(args.shots, args.images_per_class, patch_size)
    splits = {name: with_pixel_values(shared, default_processor(name)) for name in backbones}

    print_zero_shot_table(backbones["clip"], default_tokenizer(), splits["clip"])
    rows = []
    for name, model in backbones.items():
        rows.append((f"{name} pretrained", evaluate_backbone(vision_tower(name, model), splits[name])))
        rows.append((f"{name} random init", evaluate_backbone(random_init_like(name, model), splits[name])))
    print_probe_tables(rows, args.shots)
    print_pretraining_summary(backbones)
    print(f"\nThis table took {time.perf_counter() - start:.0f} s.")


if __name__ == "__main__":
    main()
