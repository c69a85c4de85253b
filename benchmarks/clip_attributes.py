"""Does the shipped CLIP read every class-defining attribute? Zero-shot, one attribute at a time.

For each of the four attributes that define a ConceptWorld class (head colour, body colour, wing pattern, tail
shape), every image is scored against one prompt per word of that attribute's vocabulary ("a photo of a bird with a
{red} head.", "... with {striped} wings.", ...; `scripts/pretrain.py`'s `ATTRIBUTE_PROMPTS`) and the most similar word
is compared with the image's true word. No downstream image was seen in pretraining.

Next to zero-shot, two ceilings on the first split: a linear probe of the same attribute on CLIP's image embeddings
(what the image tower encodes, whatever the text tower makes of it), and the same probe on the shipped DINOv2's CLS
token, which was taught the attributes with labels (what this architecture at this resolution and training budget
can see at all). Probes are trained on `--probe-images-per-class` `base_train` images per class (`base_train` and
`base_test` share their classes, not their images). Usage:

    python benchmarks/clip_attributes.py [--images-per-class 20] [--splits base_test novel_test]

Prints a Markdown table: accuracy (%) per attribute and split, next to chance (1 / vocabulary size).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from peft_interp.data import load_conceptworld
from peft_interp.data.conceptworld import attribute_vocabulary
from peft_interp.shipped import load_default

from conceptworld_baselines import linear_probe

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: scripts/ is not installed
from scripts.pretrain import ATTRIBUTE_PROMPTS, CLIP_MEAN_STD, DINOV2_MEAN_STD, attribute_zero_shot, normalize  # noqa: E402


def split_images(split: str, images_per_class: int) -> tuple[torch.Tensor, list[dict]]:
    """`(N, 3, H, W)` uint8 images of `split` and their attributes."""
    dataset = load_conceptworld(split, shots=images_per_class)
    images = torch.from_numpy(np.stack([np.asarray(image) for image in dataset["image"]])).permute(0, 3, 1, 2)
    return images, dataset["attributes"]


@torch.no_grad()
def image_features(name: str, model, images: torch.Tensor) -> torch.Tensor:
    """`(N, D)`: CLIP's projected image embedding, or DINOv2's CLS token, of `(N, 3, H, W)` uint8 images."""
    if name == "clip":
        return model.get_image_features(pixel_values=normalize(images, CLIP_MEAN_STD)).pooler_output
    return model(pixel_values=normalize(images, DINOV2_MEAN_STD)).pooler_output


def attribute_probes(name: str, model, train: tuple, test: tuple) -> dict[str, float]:
    """Linear-probe accuracy (%) of each class-defining attribute from `image_features` (train -> test)."""
    (train_images, train_attributes), (test_images, test_attributes) = train, test
    train_features, test_features = (image_features(name, model, images) for images in (train_images, test_images))
    scores = {}
    for part, kind in ATTRIBUTE_PROMPTS:
        words = attribute_vocabulary(part, kind)
        train_labels = torch.tensor([words.index(image[part][kind]) for image in train_attributes])
        test_labels = torch.tensor([words.index(image[part][kind]) for image in test_attributes])
        predictions = linear_probe(train_features, train_labels, test_features, len(words))
        scores[f"{part} {kind}"] = 100.0 * (predictions == test_labels).float().mean().item()
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images-per-class", type=int, default=20)
    parser.add_argument("--splits", nargs="+", default=["base_test", "novel_test"])
    parser.add_argument("--probe-images-per-class", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    clip = load_default("clip").float().eval()
    splits = {split: split_images(split, args.images_per_class) for split in args.splits}
    with torch.no_grad():
        scores = {split: attribute_zero_shot(clip, *images) for split, images in splits.items()}
    probe_train = split_images("base_train", args.probe_images_per_class)
    probe_test = splits[args.splits[0]]
    ceilings = {
        name: attribute_probes(name, model, probe_train, probe_test)
        for name, model in (("clip", clip), ("dinov2", load_default("dinov2").float().eval()))
    }
    probe_columns = [f"CLIP probe ({args.splits[0]})", f"DINOv2 CLS probe ({args.splits[0]})"]
    header = [f"zero-shot {split}" for split in args.splits] + probe_columns
    print("| attribute | chance | " + " | ".join(header) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in header) + " |")
    for part, kind in ATTRIBUTE_PROMPTS:
        chance = 100.0 / len(attribute_vocabulary(part, kind))
        key = f"{part} {kind}"
        row = [scores[split][key] for split in args.splits] + [ceilings["clip"][key], ceilings["dinov2"][key]]
        print(f"| {key} | {chance:.1f} | " + " | ".join(f"{value:.1f}" for value in row) + " |")
    print(
        f"\nAccuracy in %; zero-shot on {args.images_per_class} images per class, probes trained on "
        f"{args.probe_images_per_class} base_train images per class."
    )


if __name__ == "__main__":
    main()
