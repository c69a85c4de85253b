"""Does IntCoOp's attribute slot predict the attribute? ConceptWorld ground truth with the shipped tiny CLIP.

IntCoOp is trained on ConceptWorld's base classes (``base_train``, ``--shots`` images per class drawn by the seed)
with the ground-truth attribute labels of :class:`~peft_interp.tuners.intcoop.ConceptWorldAttributes` (its default:
the **wing colour**, one of 8 colour words, drawn independently of the class, so the class name does not give it
away). Everything else is ``IntCoOpConfig``'s defaults, except the deep visual prompts, which go in all 4 vision
blocks of the tiny CLIP (the default 9 exceeds its depth), and no activation checkpointing (same gradients, less
compute). SGD with momentum 0.9 and a cosine schedule, as in the other ConceptWorld benchmarks; the learning rate
0.02 was chosen among 0.005, 0.01, 0.02, 0.1, 0.2 (200 steps) and 0.05, 0.5 (100 steps) on a validation draw of the
base classes (``--eval-split base_train --eval-seed 100 --test-per-class 4``, seed 1), never on ``base_test``.

On held-out ``base_test`` images (``--test-per-class`` per class, seed 1000, as ``base_to_novel.py``), the predicted
attribute embedding ``A(x)`` is read two ways:

* **whole vocabulary**: ``model.explain(pixel_values).attribute_words[i]``, the nearest readable words of CLIP's
  whole vocabulary (~32,000 candidates), as ``explain`` returns them to a user; top-1 = the first word;
* **restricted**: argmax cosine between ``A(x)`` and the token embeddings of the attribute's own 8 words only.

Rows: chance (1 / 8 words, 3 / 8 for top-3), the majority training word, the same IntCoOp untrained (0 steps; the
same code and initialisation), IntCoOp trained, and two references that are not IntCoOp: zero-shot CLIP choosing
among the 8 words with the *true class name* in the prompt (``ZeroShotAttributes``, the package's label fallback)
and a logistic-regression probe of the wing colour on the frozen image feature (what that 128-d feature holds; the
attribute extractor reads this same feature, through the visual prompts). Also the class top-1 accuracy of each
IntCoOp over the 50 base classes (chance 2%). Mean ± std over seeds.

    python benchmarks/intcoop_attributes.py [--seeds 1 2 3] [--steps 200] [--lr 0.02]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from peft import get_peft_model

from peft_interp import IntCoOpConfig
from peft_interp.data import class_names, load_conceptworld
from peft_interp.data.conceptworld import attribute_vocabulary
from peft_interp.shipped import default_processor, default_tokenizer, load_default
from peft_interp.tuners.intcoop import ConceptWorldAttributes, ZeroShotAttributes

PART, KIND = "wing", "color"  # ConceptWorldAttributes' default


def load_split(split: str, seed: int, shots: int):
    """Pixel values ``(N, 3, 64, 64)``, class labels ``(N,)`` and ground-truth attribute words of a split."""
    data = load_conceptworld(split, seed=seed, shots=shots)
    source = ConceptWorldAttributes(PART, KIND)
    words = source({"attributes": data["attributes"]})
    pixels = default_processor("clip")(images=list(data["image"]), return_tensors="pt").pixel_values
    return {"pixels": pixels, "labels": torch.tensor(data["label"]), "words": words, "data": data}


def build_model(names: list[str], seed: int):
    torch.manual_seed(seed)
    clip = load_default("clip")
    depth = clip.config.vision_config.num_hidden_layers  # all 4 blocks (the default 9 exceeds the tiny CLIP)
    # no activation checkpointing: the same gradients, ~30% less compute; memory is no issue at this size
    config = IntCoOpConfig(class_names=names, visual_prompt_depth=depth, checkpoint_text_chunks=False)
    return get_peft_model(clip, config)


def train(model, split: dict, steps: int, batch_size: int, lr: float, seed: int) -> float:
    """SGD + momentum + cosine schedule on every trainable parameter; returns seconds."""
    start = time.perf_counter()
    if steps == 0:
        return 0.0
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        batch = torch.randint(0, len(split["labels"]), (batch_size,), generator=generator)
        loss = model(
            pixel_values=split["pixels"][batch],
            labels=split["labels"][batch],
            attributes=[split["words"][i] for i in batch.tolist()],
        ).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    model.eval()
    return time.perf_counter() - start


@torch.no_grad()
def evaluate(model, split: dict, vocabulary: list[str], chunk: int = 100) -> dict[str, float]:
    """Attribute top-1 / top-3 over the whole vocabulary (``explain``) and restricted to ``vocabulary``, and class
    top-1."""
    model.eval()
    tuner = model.base_model
    words = tuner.attribute_embedding  # (D,) frozen token embedding of a word
    table = F.normalize(torch.stack([words(w) for w in vocabulary]), dim=-1)  # (A, D)
    truth = torch.tensor([vocabulary.index(w) for w in split["words"]])
    whole1 = whole3 = 0
    restricted, class_hits = [], 0
    for start in range(0, len(truth), chunk):
        pixels = split["pixels"][start : start + chunk]
        explanation = model.explain(pixels)
        for row, word in zip(explanation.attribute_words, split["words"][start : start + chunk]):
            whole1 += row[0] == word
            whole3 += word in row[:3]
        _, pooled = tuner.image_features(pixels)
        predicted = F.normalize(tuner.intcoop_attribute[tuner.active_adapters[0]](pooled).float(), dim=-1)
        restricted.append((predicted @ table.T).topk(3, dim=-1).indices)  # (b, 3)
        class_hits += (model(pixel_values=pixels).logits.argmax(-1) == split["labels"][start : start + chunk]).sum()
    restricted = torch.cat(restricted)
    n = len(truth)
    return {
        "whole top-1": whole1 / n,
        "whole top-3": whole3 / n,
        "restricted top-1": (restricted[:, 0] == truth).float().mean().item(),
        "restricted top-3": (restricted == truth[:, None]).any(dim=-1).float().mean().item(),
        "class top-1": float(class_hits) / n,
    }


@torch.no_grad()
def zero_shot_accuracy(test: dict, vocabulary: list[str]) -> dict[str, float]:
    """Zero-shot CLIP over the attribute's words, "a photo of a {word} {true class name}." (needs the class)."""
    clip = load_default("clip")
    source = ZeroShotAttributes(clip, default_tokenizer(), vocabulary=vocabulary)
    images = torch.nn.functional.normalize(clip.get_image_features(pixel_values=test["pixels"]).pooler_output, dim=-1)
    names = test["data"]["class_name"]
    truth = torch.tensor([vocabulary.index(w) for w in test["words"]])
    top = torch.stack([(source.text_features(name) @ image).topk(3).indices for image, name in zip(images, names)])
    return {"restricted top-1": (top[:, 0] == truth).float().mean().item(),
            "restricted top-3": (top == truth[:, None]).any(dim=-1).float().mean().item()}  # fmt: skip


def probe_accuracy(train_split: dict, test: dict, vocabulary: list[str], seed: int) -> dict[str, float]:
    """Multinomial logistic regression (L-BFGS, weight decay 1e-3) on the frozen, normalised image feature."""
    clip = load_default("clip")
    with torch.no_grad():
        feats = {
            name: F.normalize(clip.get_image_features(pixel_values=s["pixels"]).pooler_output, dim=-1)
            for name, s in (("train", train_split), ("test", test))
        }
    targets = torch.tensor([vocabulary.index(w) for w in train_split["words"]])
    truth = torch.tensor([vocabulary.index(w) for w in test["words"]])
    torch.manual_seed(seed)
    linear = torch.nn.Linear(feats["train"].shape[1], len(vocabulary))
    optimizer = torch.optim.LBFGS(linear.parameters(), max_iter=300, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(linear(feats["train"] * 10), targets) + 1e-3 * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        top = linear(feats["test"] * 10).topk(3, dim=-1).indices
    return {"restricted top-1": (top[:, 0] == truth).float().mean().item(),
            "restricted top-3": (top == truth[:, None]).any(dim=-1).float().mean().item()}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--shots", type=int, default=16)
    parser.add_argument("--test-per-class", type=int, default=10)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=0.02, help="SGD learning rate (chosen on base_train seed 100)")
    parser.add_argument(
        "--eval-split",
        default="base_test",
        help="base_test (the report) or base_train with another seed (--eval-split base_train --eval-seed 100) to "
        "choose --lr without the test images",
    )
    parser.add_argument("--eval-seed", type=int, default=1000)
    args = parser.parse_args()

    start = time.perf_counter()
    names = class_names("base_train")
    vocabulary = list(attribute_vocabulary(PART, KIND))
    test = load_split(args.eval_split, seed=args.eval_seed, shots=args.test_per_class)
    rows: dict[str, list[dict[str, float]]] = {}
    train_seconds = []
    for seed in args.seeds:
        train_split = load_split("base_train", seed=seed, shots=args.shots)
        counts = {w: train_split["words"].count(w) for w in vocabulary}
        majority = max(counts, key=counts.get)
        share = sum(w == majority for w in test["words"]) / len(test["words"])
        top3 = sum(w in sorted(counts, key=counts.get)[-3:] for w in test["words"]) / len(test["words"])
        guess = {"whole top-1": share, "whole top-3": top3, "restricted top-1": share, "restricted top-3": top3}
        rows.setdefault("majority training word", []).append(guess)
        for steps in (0, args.steps):
            model = build_model(names, seed)
            train_seconds.append(train(model, train_split, steps, args.batch_size, args.lr, seed))
            label = "IntCoOp untrained (0 steps)" if steps == 0 else f"IntCoOp trained ({steps} steps)"
            rows.setdefault(label, []).append(evaluate(model, test, vocabulary))
        rows.setdefault("zero-shot CLIP, true class name given", []).append(zero_shot_accuracy(test, vocabulary))
        rows.setdefault("linear probe, frozen image feature", []).append(
            probe_accuracy(train_split, test, vocabulary, seed)
        )

    one, three = 1 / len(vocabulary), 3 / len(vocabulary)
    chance = {"whole top-1": one, "whole top-3": three, "restricted top-1": one, "restricted top-3": three}
    order = ["chance (uniform over the words)", "majority training word", "IntCoOp untrained (0 steps)",
             f"IntCoOp trained ({args.steps} steps)", "zero-shot CLIP, true class name given",
             "linear probe, frozen image feature"]  # fmt: skip
    rows["chance (uniform over the words)"] = [chance]
    print(
        f"\nConceptWorld attribute prediction: {PART} {KIND} ({len(vocabulary)} words: {', '.join(vocabulary)}); "
        f"tiny CLIP shipped with peft-interp; IntCoOp trained on base_train ({len(names)} classes x {args.shots} "
        f"shots), {args.steps} SGD steps, batch {args.batch_size}, lr {args.lr}; evaluated on {args.eval_split} "
        f"(seed {args.eval_seed}, {len(test['words'])} images); seeds {args.seeds}; accuracy in %, mean ± std over "
        f"seeds; training {statistics.mean(t for t in train_seconds if t):.0f} s per seed, "
        f"total {time.perf_counter() - start:.0f} s\n"
    )
    columns = ["whole top-1", "whole top-3", "restricted top-1", "restricted top-3", "class top-1"]
    header = f"{'':<40}" + "".join(f"{c:>18}" for c in columns)
    print(header)
    print("-" * len(header))
    for label in order:
        cells = []
        for column in columns:
            values = [100 * r[column] for r in rows[label] if column in r]
            if not values:
                cells.append(f"{'-':>18}")
            elif len(values) == 1:
                cells.append(f"{values[0]:>18.1f}")
            else:
                cells.append(f"{statistics.mean(values):>11.1f} ± {statistics.stdev(values):>4.1f}")
        print(f"{label:<40}" + "".join(cells))
    print(
        "\nwhole = top word(s) of model.explain() over all readable words of CLIP's vocabulary; restricted = argmax "
        f"cosine among the {len(vocabulary)} {KIND} words; class top-1 over {len(names)} base classes (chance "
        f"{100 / len(names):.0f}%)."
    )


if __name__ == "__main__":
    main()
