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
import time

import numpy as np
import torch
from torch.nn import functional as F

from peft_interp.data import class_names, load_conceptworld
from peft_interp.data.conceptworld import PART_NAMES
from peft_interp.hub import default_processor, default_tokenizer, load_default, pretraining_info


PROMPTS = {"bare class name": "{}", "a photo of a {}.": "a photo of a {}."}
KNN_KS = (1, 3, 5, 10, 20)


# ----------------------------------------------------------------------------------------------------------------
# Data and features
# ----------------------------------------------------------------------------------------------------------------


def patch_part_labels(part_masks: torch.Tensor, patch_size: int) -> torch.Tensor:
    """`(N, H, W)` part ids -> `(N, num_patches)`: each patch's majority part id (ties go to the smaller id),
    patches in the row-major order of the ViT's patch tokens."""
    num_images, height, width = part_masks.shape
    patches = part_masks.reshape(num_images, height // patch_size, patch_size, width // patch_size, patch_size)
    patches = patches.permute(0, 1, 3, 2, 4).reshape(num_images, -1, patch_size * patch_size).long()
    counts = F.one_hot(patches, num_classes=len(PART_NAMES) + 1).sum(dim=2)  # (N, num_patches, 5)
    return counts.argmax(dim=-1)


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
def zero_shot_accuracy(clip, tokenizer, pixel_values: torch.Tensor, labels: torch.Tensor, names: list[str], prompt: str) -> float:
    """Top-1 accuracy of classifying images `(N, 3, H, W)` by cosine similarity to the prompted class names."""
    text = tokenizer([prompt.format(name) for name in names], padding=True, return_tensors="pt")
    text_embeds = F.normalize(clip.get_text_features(**text).pooler_output, dim=-1)  # (C, E)
    image_embeds = torch.cat([clip.get_image_features(pixel_values=chunk).pooler_output for chunk in pixel_values.split(500)])
    predictions = (F.normalize(image_embeds, dim=-1) @ text_embeds.T).argmax(-1)
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
    train: torch.Tensor, train_labels: torch.Tensor, test: torch.Tensor, num_classes: int, l2: float = 1e-3
) -> torch.Tensor:
    """Fits a multinomial logistic regression on `(N, D)` features (full batch, L-BFGS) and returns the predicted
    labels `(M,)` of `test` `(M, D)`."""
    train, test = standardize(train, test)
    linear = torch.nn.Linear(train.shape[1], num_classes)
    optimizer = torch.optim.LBFGS(linear.parameters(), lr=1.0, max_iter=200, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(linear(train), train_labels) + l2 * linear.weight.pow(2).sum()
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
    """Linear probe of the part label of each patch: accuracy, balanced accuracy (mean per-part recall), and the
    majority-class baseline's accuracy."""
    predictions = linear_probe(train_patches.flatten(0, 1), train_labels.flatten(), test_patches.flatten(0, 1), len(PART_NAMES) + 1)
    targets = test_labels.flatten()
    recalls = [(predictions[targets == part] == part).float().mean().item() for part in targets.unique()]
    majority = train_labels.flatten().bincount().argmax()
    return {
        "accuracy": (predictions == targets).float().mean().item(),
        "balanced": float(np.mean(recalls)),
        "majority": (targets == majority).float().mean().item(),
    }


# ----------------------------------------------------------------------------------------------------------------
# Table
# ----------------------------------------------------------------------------------------------------------------


def random_init_like(model):
    """The same architecture with fresh random weights (seeded), as a control."""
    torch.manual_seed(0)
    return type(model)(model.config).eval()


def evaluate_backbone(model, splits: dict, shots: int) -> dict:
    """Linear probe, k-NN and part probe of one backbone; `splits` holds pixel values, labels and patch labels."""
    train, test = (vision_features(model, splits[name]["pixel_values"]) for name in ("base_train", "base_test"))
    train_labels, test_labels = splits["base_train"]["labels"], splits["base_test"]["labels"]
    results = {"parts": patch_probe(train["patches"], splits["base_train"]["patch_labels"], test["patches"], splits["base_test"]["patch_labels"])}
    for pooling in ("cls", "mean"):
        predictions = linear_probe(train[pooling], train_labels, test[pooling], len(splits["base_test"]["names"]))
        results[f"linear {pooling}"] = (predictions == test_labels).float().mean().item()
        results[f"knn {pooling}"] = knn_accuracies(train[pooling], train_labels, test[pooling], test_labels)
    return results


def load_splits(shots: int, images_per_class: int, patch_size: int) -> dict[str, dict]:
    """`base_train` (`shots` per class, seed 1), `base_test` and `novel_test` (`images_per_class` per class), each
    as `{"dataset", "labels" (N,), "patch_labels" (N, num_patches), "names"}`."""
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
            "labels": torch.tensor(dataset["label"]),
            "patch_labels": patch_part_labels(part_masks, patch_size),
            "names": class_names(split),
        }
    return splits


def with_pixel_values(splits: dict[str, dict], processor) -> dict[str, dict]:
    """`splits` with each split's `(N, 3, H, W)` "pixel_values" computed by a backbone's image processor."""
    return {
        split: {**contents, "pixel_values": processor(contents["dataset"]["image"], return_tensors="pt").pixel_values}
        for split, contents in splits.items()
    }


def percent(value: float) -> str:
    return f"{100 * value:5.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shots", type=int, default=16, help="base_train images per class for the probes")
    parser.add_argument("--images-per-class", type=int, default=50, help="test images per class")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()

    backbones = {name: load_default(name) for name in ("clip", "dinov2")}
    tokenizer = default_tokenizer()
    patch_size = backbones["dinov2"].config.patch_size
    assert backbones["clip"].config.vision_config.patch_size == patch_size
    shared = load_splits(args.shots, args.images_per_class, patch_size)
    splits = {name: with_pixel_values(shared, default_processor(name)) for name in backbones}

    print("## Zero-shot CLIP (top-1 %, chance 2.0)\n")
    print("| prompt | base_test | novel_test | HM |\n| --- | ---: | ---: | ---: |")
    clip_splits = splits["clip"]
    for label, prompt in PROMPTS.items():
        accuracy = {
            split: zero_shot_accuracy(backbones["clip"], tokenizer, clip_splits[split]["pixel_values"], clip_splits[split]["labels"], clip_splits[split]["names"], prompt)
            for split in ("base_test", "novel_test")
        }
        hm = harmonic_mean(accuracy["base_test"], accuracy["novel_test"])
        print(f"| {label} | {percent(accuracy['base_test'])} | {percent(accuracy['novel_test'])} | {percent(hm)} |")

    rows = []
    for name, model in backbones.items():
        vision = model.vision_model if name == "clip" else model
        for variant, backbone in (("pretrained", vision), ("random init", random_init_like(vision))):
            rows.append((f"{name} {variant}", evaluate_backbone(backbone, splits[name], args.shots)))

    print(f"\n## Frozen features, base classes ({args.shots}-shot base_train -> base_test, top-1 %, chance 2.0)\n")
    knn_header = " | ".join(f"{k}-NN" for k in KNN_KS)
    print(f"| backbone | features | linear | {knn_header} |\n| --- | --- | ---: |" + " ---: |" * len(KNN_KS))
    for label, results in rows:
        for pooling in ("cls", "mean"):
            knn = " | ".join(percent(results[f"knn {pooling}"][k]) for k in KNN_KS)
            print(f"| {label} | {pooling} | {percent(results[f'linear {pooling}'])} | {knn} |")

    print("\n## Per-patch part probe (5 labels: background, head, body, wing, tail; %)\n")
    print("| backbone | accuracy | balanced accuracy | majority-class baseline |\n| --- | ---: | ---: | ---: |")
    for label, results in rows:
        parts = results["parts"]
        print(f"| {label} | {percent(parts['accuracy'])} | {percent(parts['balanced'])} | {percent(parts['majority'])} |")

    print("\n## Pretraining (from pretraining.json)\n")
    for name in backbones:
        info = pretraining_info(name)
        seconds = info["wall_clock_seconds"]
        print(
            f"- {name}: {seconds['training']:.0f} s training + {seconds['rendering_images']:.0f} s rendering "
            f"{info['settings']['num_images']} images (shared), {info['environment']['torch_threads']} threads, "
            f"seed {info['seed']}, {info['num_parameters'] / 1e6:.2f} M parameters"
        )
    print(f"\nThis table took {time.perf_counter() - start:.0f} s.")


if __name__ == "__main__":
    main()
