"""Base-to-novel generalisation on ConceptWorld with the shipped tiny CLIP: zero-shot CLIP, CoOp, DualViewMI, IPL.

The CoOp protocol: train on the base classes (``--shots`` images per class, sampled by seed), test on held-out
images of the base classes and of the novel classes, each as its own n-way problem; HM = 2 B N / (B + N),
computed from the means over seeds. The image tower is frozen and unprompted, so image features are computed
once and every step only runs the text side.

    python benchmarks/base_to_novel.py [--seeds 1 2 3] [--shots 16] [--steps 300]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from peft import get_peft_model
from tqdm.auto import tqdm

from peft_interp import CoOpConfig, DualViewMIConfig, IPLConfig
from peft_interp.data import class_names, load_conceptworld
from peft_interp.hub import default_processor, load_default

METHODS = {"CoOp": CoOpConfig, "DualViewMI": DualViewMIConfig, "IPL": IPLConfig}


@torch.no_grad()
def image_features(model, split: str, seed: int, **sizes) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised image features ``(N, P)`` and labels of a ConceptWorld split, from the frozen image tower."""
    data = load_conceptworld(split, seed=seed, **sizes)
    pixels = default_processor("clip")(images=list(data["image"]), return_tensors="pt").pixel_values
    features = torch.cat([model.base_model.encode_image(pixels[i : i + 256]) for i in range(0, len(pixels), 256)])
    return features, torch.tensor(data["label"])


def accuracy(model, features: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return (model(image_embeds=features).logits.argmax(-1) == labels).float().mean().item()


def train(model, features, labels, steps: int, batch_size: int, lr: float, seed: int) -> None:
    """SGD with momentum and a cosine schedule on the adapter (the CoOp family's optimiser)."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    generator = torch.Generator().manual_seed(seed)
    for step in range(steps):
        model.base_model.on_train_step_begin(step)
        batch = torch.randint(0, len(labels), (batch_size,), generator=generator)
        model.train()
        loss = model(image_embeds=features[batch], labels=labels[batch]).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()


def harmonic_mean(base: float, novel: float) -> float:
    return 2 * base * novel / (base + novel) if base + novel else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--shots", type=int, default=16)
    parser.add_argument("--test-per-class", type=int, default=10)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.5, help="SGD learning rate (tiny CLIP; the papers use 0.002)")
    args = parser.parse_args()

    base_names, novel_names = class_names("base_train"), class_names("novel_train")
    probe = get_peft_model(load_default("clip"), CoOpConfig(class_names=base_names))
    test = {
        "base": image_features(probe, "base_test", seed=1000, shots=args.test_per_class),
        "novel": image_features(probe, "novel_test", seed=1000, shots=args.test_per_class),
    }
    results: dict[str, list[tuple[float, float]]] = {"zero-shot CLIP": [], **{name: [] for name in METHODS}}
    start = time.perf_counter()
    for seed in tqdm(args.seeds, desc="seeds"):
        train_features, train_labels = image_features(probe, "base_train", seed=seed, shots=args.shots)
        for name, config_cls in METHODS.items():
            torch.manual_seed(seed)
            model = get_peft_model(load_default("clip"), config_cls(class_names=base_names))
            if name == "CoOp":  # zero-shot CLIP is the same model with its adapter disabled
                with model.disable_adapter():
                    zero_shot = [accuracy(model, *test["base"])]
                    model.base_model.set_class_names(novel_names)
                    zero_shot.append(accuracy(model, *test["novel"]))
                    model.base_model.set_class_names(base_names)
                results["zero-shot CLIP"].append(tuple(zero_shot))
            train(model, train_features, train_labels, args.steps, args.batch_size, args.lr, seed)
            base_accuracy = accuracy(model, *test["base"])
            model.base_model.set_class_names(novel_names)
            results[name].append((base_accuracy, accuracy(model, *test["novel"])))

    print(f"\nConceptWorld base-to-novel: {len(base_names)} base / {len(novel_names)} novel classes, {args.shots} shots, "
          f"{args.steps} steps, seeds {args.seeds}; tiny CLIP shipped with peft-interp ({time.perf_counter() - start:.0f} s)\n")  # fmt: skip
    print(f"{'method':<16} {'base':>14} {'novel':>14} {'HM':>6}")
    for name, runs in results.items():
        base = [b for b, _ in runs]
        novel = [n for _, n in runs]
        spread = lambda values: statistics.stdev(values) if len(values) > 1 else 0.0  # noqa: E731
        print(
            f"{name:<16} {100 * statistics.mean(base):>7.1f} ± {100 * spread(base):>4.1f} "
            f"{100 * statistics.mean(novel):>7.1f} ± {100 * spread(novel):>4.1f} "
            f"{100 * harmonic_mean(statistics.mean(base), statistics.mean(novel)):>6.1f}"
        )
    print(f"(chance: base {100 / len(base_names):.1f}, novel {100 / len(novel_names):.1f})")


if __name__ == "__main__":
    main()
