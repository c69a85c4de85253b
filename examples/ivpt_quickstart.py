"""IVPT quick start: train IVPT and VPT-deep on ConceptWorld, compare them, look at IVPT's concepts.

Runs on a CPU in a few minutes and needs no network:

    python examples/ivpt_quickstart.py [--steps 60] [--output-dir outputs/ivpt_quickstart]

1. ConceptWorld base classes (50 classes of synthetic birds), 16 training images per class.
2. A small DINOv2: the checkpoint shipped with peft-interp when present (``peft_interp.shipped``), otherwise a
   randomly initialised one built from a config. With network access, use
   ``Dinov2Model.from_pretrained("facebook/dinov2-with-registers-base")`` and ``image_size=518`` instead.
3. IVPT and VPT-deep adapters trained the same way; accuracy on held-out images.
4. IVPT's explanation of a few test images written to ``concept_maps.png``; the adapter saved as it would be
   shared on the Hub (weights, ``explanation.json``, example pictures, model card) and reloaded.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from peft import get_peft_model
from tqdm.auto import tqdm
from transformers import Dinov2Config, Dinov2Model

from peft_interp import IVPTConfig, VPTDeepConfig
from peft_interp.data import class_names, load_conceptworld
from peft_interp.sharing import load_adapter, save_for_hub
from peft_interp.visualization import concept_map_panel, stack_panels

IMAGE_SIZE = 64
MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])  # ImageNet statistics


def load_backbone(seed: int) -> tuple[torch.nn.Module, str]:
    """The shipped ConceptWorld DINOv2 if the package has it, else a random small one."""
    try:
        from peft_interp.shipped import load_default

        return load_default("dinov2"), "DINOv2 pretrained on ConceptWorld (shipped)"
    except (ImportError, OSError, ValueError):
        torch.manual_seed(seed)
        config = Dinov2Config(
            hidden_size=96, num_hidden_layers=6, num_attention_heads=3, intermediate_size=384,
            patch_size=8, image_size=IMAGE_SIZE,
        )  # fmt: skip
        return Dinov2Model(config), "random DINOv2 (6 x 96, no checkpoint found)"


def to_tensors(split: str, seed: int, **sizes) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """A ConceptWorld split as normalised ``(N, 3, S, S)`` pixels, ``(N,)`` labels and the raw uint8 images."""
    data = load_conceptworld(split, seed=seed, image_size=IMAGE_SIZE, **sizes).with_format("numpy")[:]
    images = data["image"]  # (N, S, S, 3) uint8
    pixels = torch.from_numpy(((images / 255.0 - MEAN) / STD).transpose(0, 3, 1, 2)).float()
    return pixels, torch.from_numpy(data["label"]).long(), images


def train(model, pixels, labels, steps: int, batch_size: int, seed: int, desc: str) -> float:
    """Adam on the adapter's parameter groups; returns seconds taken."""
    groups = model.base_model.optimizer_param_groups() if hasattr(model.base_model, "optimizer_param_groups") else [
        {"params": [p for p in model.parameters() if p.requires_grad], "lr": 1e-2}
    ]
    optimizer = torch.optim.Adam(groups)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    start = time.perf_counter()
    with tqdm(range(steps), desc=desc, unit="step") as progress:
        for _ in progress:
            batch = torch.randint(0, len(labels), (batch_size,), generator=generator)
            loss = model(pixel_values=pixels[batch], labels=labels[batch]).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], 2.0)
            optimizer.step()
            progress.set_postfix(loss=f"{loss.item():.3f}")
    return time.perf_counter() - start


@torch.no_grad()
def predict(model, pixels: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
    model.eval()
    return torch.cat([model(pixel_values=pixels[i : i + batch_size]).logits for i in range(0, len(pixels), batch_size)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60, help="training steps per method")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--shots", type=int, default=16, help="training images per class")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", type=Path, default=Path("outputs/ivpt_quickstart"))
    args = parser.parse_args()
    args.output_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)

    names = class_names("base_train")
    train_pixels, train_labels, _ = to_tensors("base_train", args.seed, shots=args.shots)
    test_pixels, test_labels, test_images = to_tensors("base_test", seed=1000, shots=4)
    _, backbone_name = load_backbone(args.seed)
    print(f"ConceptWorld base classes: {len(names)}; {len(train_labels)} training / {len(test_labels)} test images")
    print(f"backbone: {backbone_name}\n")

    configs = {
        "VPT-deep": VPTDeepConfig(num_classes=len(names), class_names=names, image_size=IMAGE_SIZE),
        "IVPT": IVPTConfig(num_classes=len(names), class_names=names, image_size=IMAGE_SIZE),
    }
    rows, models = [], {}
    for method, config in configs.items():
        torch.manual_seed(args.seed)
        model = get_peft_model(load_backbone(args.seed)[0], config)
        seconds = train(model, train_pixels, train_labels, args.steps, args.batch_size, args.seed, method)
        accuracy = (predict(model, test_pixels).argmax(-1) == test_labels).float().mean().item()
        rows.append((method, model.get_nb_trainable_parameters()[0], accuracy, seconds))
        models[method] = model

    print(f"\n{'method':<10} {'trainable params':>17} {'test accuracy':>14} {'train time':>11}")
    for method, params, accuracy, seconds in rows:
        print(f"{method:<10} {params:>17,} {accuracy:>14.1%} {seconds:>10.0f}s")
    print(f"(chance: {1 / len(names):.1%})")

    ivpt = models["IVPT"].eval()
    explanation = ivpt.explain(test_pixels[:6])
    panels = []
    for i in range(6):
        predicted = names[explanation.predictions[i]]
        panels.append(
            concept_map_panel(
                test_images[i], explanation.concept_maps[-1][i], contributions=explanation.contributions[i].tolist()
            )
        )
        print(f"\nimage {i}: true '{names[test_labels[i]]}', predicted '{predicted}'")
        print("  concept contributions to the predicted logit:", [round(c, 2) for c in explanation.contributions[i].tolist()])
    figure = args.output_dir / "concept_maps.png"
    stack_panels(panels).save(figure)

    # The adapter as it would go to the Hub: weights, explanation.json, example concept maps and a model card.
    adapter_dir = args.output_dir / "ivpt-conceptworld"
    ivpt_accuracy = dict((method, accuracy) for method, _, accuracy, _ in rows)["IVPT"]
    save_for_hub(
        ivpt, adapter_dir, repo_id="ivpt-conceptworld", metrics={"accuracy": ivpt_accuracy}, dataset="conceptworld",
        example_pixels=test_pixels[:4], example_images=test_images[:4],
        training_notes=f"{args.steps} Adam steps, batch {args.batch_size}, {args.shots} shots per class, on {backbone_name}.",
    )  # fmt: skip
    reloaded = load_adapter(load_backbone(args.seed)[0], adapter_dir).eval()
    same = torch.equal(predict(reloaded, test_pixels[:32]), predict(ivpt, test_pixels[:32]))
    print(f"\nconcept maps: {figure}")
    print(f"adapter with model card: {adapter_dir} (reloaded logits identical: {same})")


if __name__ == "__main__":
    main()
