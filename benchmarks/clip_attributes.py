"""Does the shipped CLIP read every class-defining attribute? Zero-shot, one attribute at a time.

For each of the four attributes that define a ConceptWorld class (head colour, body colour, wing pattern, tail
shape), every image is scored against one prompt per word of that attribute's vocabulary ("a photo of a bird with a
{red} head.", "... with {striped} wings.", ...; `peft_interp.pretrain.ATTRIBUTE_PROMPTS`) and the most similar word
is compared with the image's true word. No downstream image was seen in pretraining. Usage:

    python benchmarks/clip_attributes.py [--images-per-class 20] [--splits base_test novel_test]

Prints a Markdown table: accuracy (%) per attribute and split, next to chance (1 / vocabulary size).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from peft_interp.data import load_conceptworld
from peft_interp.data.conceptworld import attribute_vocabulary
from peft_interp.hub import load_default
from peft_interp.pretrain import ATTRIBUTE_PROMPTS, attribute_zero_shot


def split_images(split: str, images_per_class: int) -> tuple[torch.Tensor, list[dict]]:
    """`(N, 3, H, W)` uint8 images of `split` and their attributes."""
    dataset = load_conceptworld(split, shots=images_per_class)
    images = torch.from_numpy(np.stack([np.asarray(image) for image in dataset["image"]])).permute(0, 3, 1, 2)
    return images, dataset["attributes"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images-per-class", type=int, default=20)
    parser.add_argument("--splits", nargs="+", default=["base_test", "novel_test"])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    clip = load_default("clip").float().eval()
    with torch.no_grad():
        scores = {split: attribute_zero_shot(clip, *split_images(split, args.images_per_class)) for split in args.splits}
    print("| attribute | chance | " + " | ".join(args.splits) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in args.splits) + " |")
    for part, kind in ATTRIBUTE_PROMPTS:
        chance = 100.0 / len(attribute_vocabulary(part, kind))
        row = " | ".join(f"{scores[split][f'{part} {kind}']:.1f}" for split in args.splits)
        print(f"| {part} {kind} | {chance:.1f} | {row} |")
    print(f"\n{args.images_per_class} images per class; accuracy in %.")


if __name__ == "__main__":
    main()
