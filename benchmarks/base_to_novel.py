"""Base-to-novel generalisation on ConceptWorld with the shipped tiny CLIP: zero-shot CLIP, each prompt learner with
and without IPL, DualViewMI and IntCoOp; prompt readability beside the accuracies.

The CoOp protocol: train on the base classes (``--shots`` images per class, sampled by seed), test on held-out
images of the base classes and of the novel classes, each as its own n-way problem; HM = 2 B N / (B + N),
computed from the means over seeds.

* Learners on frozen image features (CoOp, DualViewMI, and IPL over CoOp): the image tower is frozen and
  unprompted, so image features are computed once and every step only runs the text side.
* IntCoOp, MaPLe and PromptSRC (and IPL over them) prompt the image tower: trained on pixels for
  ``--intcoop-steps`` steps, IntCoOp with ConceptWorld's ground-truth attribute (the wing colour) as its word.
* IPL (hybrid prompt): its words are chosen by the task loss on the cached training features, one per block of
  epochs (``IPLConfig`` defaults), as the trainers do. Its cost grows with the candidate vocabulary
  (``--ipl-vocabulary``: every candidate's own text feature is computed once per run, and the pre-filter ranks them
  all) and with the candidates scored exactly per step (``--ipl-prefilter``); ``--fast`` bounds both and the steps.
* Time: each row's seconds are measured on the first seed and the estimated total is printed then; ``--rows``
  runs only the named rows (e.g. ``--rows "CoOp + IPL"`` with one seed to time one row).
* Readability: the share of prompt tokens that read as words (a selected word, or a learnt vector whose nearest
  token in the whole vocabulary is a readable word, ``peft_interp.prompt_metrics.prompt_readability``), and the
  readable prompt of the first seed.

Learners added later plug in by one entry of ``LEARNERS`` (the name IPL knows them by, their config class and
whether they train on features or pixels).

    python benchmarks/base_to_novel.py [--seeds 1 2 3] [--shots 16] [--steps 200] [--intcoop-steps 60] [--skip-pixels]
        [--ipl-vocabulary 5000] [--ipl-prefilter 32] [--fast] [--rows "CoOp" "CoOp + IPL" ...]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
from peft import get_peft_model
from tqdm.auto import tqdm

from peft_interp import CoOpConfig, DualViewMIConfig, IntCoOpConfig, IPLConfig
from peft_interp.tuners import CoCoOpConfig, KgCoOpConfig, MaPLeConfig, PromptSRCConfig
from peft_interp.data import class_names, load_conceptworld
from peft_interp.shipped import default_processor, load_default
from peft_interp.prompt_metrics import prompt_readability
from peft_interp.tuners.intcoop.attributes import ConceptWorldAttributes

# row label -> (IPL's name of the learner or None, config class, trains on "features" or "pixels")
LEARNERS = {
    "CoOp": ("coop", CoOpConfig, "features"),
    "CoCoOp": ("cocoop", CoCoOpConfig, "features"),
    "KgCoOp": ("kgcoop", KgCoOpConfig, "features"),
    "IntCoOp": ("intcoop", IntCoOpConfig, "pixels"),
    "MaPLe": ("maple", MaPLeConfig, "pixels"),
    "PromptSRC": ("promptsrc", PromptSRCConfig, "pixels"),
}
OTHERS = {  # no IPL variant (yet)
    "DualViewMI": (None, DualViewMIConfig, "features"),
}
INTCOOP_SETTINGS = {"visual_prompt_depth": 4}  # every block of the shipped 4-block image tower
# --fast: what bounds the cost of a 3-seed table of all rows (see the module docstring); explicit flags win
FAST = {"ipl_vocabulary": 1000, "ipl_prefilter": 16, "shots": 8, "steps": 100, "intcoop_steps": 30}
DEEP_SETTINGS = {"MaPLe": {"prompt_depth": 4}, "PromptSRC": {"text_prompt_depth": 4, "vision_prompt_depth": 4}}  # 4 blocks


def conceptworld(split: str, seed: int, shots: int) -> tuple[torch.Tensor, torch.Tensor, list]:
    """Pixels ``(N, 3, S, S)``, labels ``(N,)`` and the attribute word of each image (the wing colour)."""
    data = load_conceptworld(split, seed=seed, shots=shots)
    pixels = default_processor("clip")(images=list(data["image"]), return_tensors="pt").pixel_values
    return pixels, torch.tensor(data["label"]), ConceptWorldAttributes()(data[:])


@torch.no_grad()
def image_features(model, pixels: torch.Tensor) -> torch.Tensor:
    return torch.cat([model.base_model.encode_image(pixels[i : i + 256]) for i in range(0, len(pixels), 256)])


def build(label: str, ipl: dict | None, names: list[str]):
    """The row's model; ``ipl``: ``None`` for the learner alone, else IPL's own settings (vocabulary, pre-filter)."""
    learner, config_cls, _ = {**LEARNERS, **OTHERS}[label]
    settings = INTCOOP_SETTINGS if learner == "intcoop" else DEEP_SETTINGS.get(label, {})
    if ipl is None:
        return get_peft_model(load_default("clip"), config_cls(class_names=names, **settings))
    config = IPLConfig(class_names=names, context_learner=learner, learner_settings=settings or None, **ipl)
    return get_peft_model(load_default("clip"), config)


def train(model, data: dict, kind: str, steps: int, batch_size: int, lr: float, seed: int) -> None:
    """SGD with momentum and a cosine schedule on the adapter (the CoOp family's optimiser); IPL's words are
    selected by its schedule (one per block of epochs) from the cached features."""
    tuner = model.base_model
    labels = data["labels"]
    if isinstance(tuner.peft_config["default"], IPLConfig):
        tuner.set_selection_data(data["features"], labels, steps_per_epoch=max(1, len(labels) // batch_size))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    generator = torch.Generator().manual_seed(seed)
    steps_per_epoch = max(1, len(labels) // batch_size)
    model.train()
    for step in range(steps):
        tuner.on_train_step_begin(step)
        batch = torch.randint(0, len(labels), (batch_size,), generator=generator)
        if kind == "features":
            loss = model(image_embeds=data["features"][batch], labels=labels[batch]).loss
        else:
            extra = {}
            if hasattr(tuner, "attribute_targets"):  # IntCoOp's attribute words
                extra["attributes"] = [data["attributes"][i] for i in batch.tolist()]
            loss = model(pixel_values=data["pixels"][batch], labels=labels[batch], **extra).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if (step + 1) % steps_per_epoch == 0:  # PromptSRC's Gaussian prompt aggregation runs here
            tuner.on_epoch_end((step + 1) // steps_per_epoch, math.ceil(steps / steps_per_epoch))  # 1-based
    model.eval()


@torch.no_grad()
def accuracy(model, data: dict, kind: str) -> float:
    if kind == "features":
        logits = model(image_embeds=data["features"]).logits
    else:
        logits = torch.cat([model(pixel_values=data["pixels"][i : i + 64]).logits for i in range(0, len(data["labels"]), 64)])
    return (logits.argmax(-1) == data["labels"]).float().mean().item()


def readability(model) -> tuple[float, str]:
    """Share of prompt tokens that read as words, and the readable prompt."""
    tuner = model.base_model
    soft = prompt_readability(model)
    config = tuner.peft_config["default"]
    words = config.num_words if isinstance(config, IPLConfig) and config.variant == "hybrid" else 0
    share = (words + soft.readable_fraction * config.num_context_tokens) / (words + config.num_context_tokens)
    decoding = tuner.explain_prompt() if hasattr(tuner, "explain_prompt") else None
    if decoding is not None and getattr(decoding, "decoded_prompt", ""):
        prompt = decoding.decoded_prompt
    else:  # nearest readable word of every learnt vector, as IPL's decoded prompt shows them
        nearest = tuner.decode_context(candidate_ids=tuner.readable_vocabulary()).tokens
        attribute_slot = " [attribute]" if isinstance(config, IntCoOpConfig) else ""
        prompt = " ".join(f"[{t}]" for t in nearest) + attribute_slot + " {}."
    return share, prompt


def row_name(label: str, ipl: bool) -> str:
    return f"{label} + IPL" if ipl else label


def harmonic_mean(base: float, novel: float) -> float:
    return 2 * base * novel / (base + novel) if base + novel else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--shots", type=int, default=16)
    parser.add_argument("--test-per-class", type=int, default=10)
    parser.add_argument("--steps", type=int, default=200, help="steps of the learners on features")
    parser.add_argument("--intcoop-steps", type=int, default=60, help="steps of the learners on pixels (IntCoOp)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--intcoop-batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=0.5, help="SGD learning rate (tiny CLIP; the papers use 0.002)")
    parser.add_argument("--intcoop-lr", type=float, default=0.05, help="SGD learning rate of the learners on pixels")
    parser.add_argument("--skip-pixels", action="store_true", help="leave out the learners trained on pixels")
    parser.add_argument("--ipl-vocabulary", type=int, default=IPLConfig.vocabulary_size,
                        help="IPL's candidate words (IPLConfig.vocabulary_size: the most frequent readable words)")
    parser.add_argument("--ipl-prefilter", type=int, default=IPLConfig.prefilter_size,
                        help="candidates IPL scores exactly per greedy step (IPLConfig.prefilter_size)")
    parser.add_argument("--fast", action="store_true",
                        help=f"bounded cost: {FAST} unless given (aimed at a 3-seed table of all rows in about 20 "
                             "minutes on 2 idle CPU cores; check the estimate printed after the first seed)")  # fmt: skip
    parser.add_argument("--rows", nargs="+", default=None, help='only these rows, e.g. "CoOp" "CoOp + IPL"')
    args = parser.parse_args()
    if args.fast:  # FAST becomes the defaults: flags given on the command line still win
        parser.set_defaults(**FAST)
        args = parser.parse_args()
    ipl_settings = {"vocabulary_size": args.ipl_vocabulary, "prefilter_size": args.ipl_prefilter}

    base_names, novel_names = class_names("base_train"), class_names("novel_train")
    probe = get_peft_model(load_default("clip"), CoOpConfig(class_names=base_names))
    test = {}
    for split, key in (("base_test", "base"), ("novel_test", "novel")):
        pixels, labels, _ = conceptworld(split, 1000, args.test_per_class)
        test[key] = {"pixels": pixels, "labels": labels, "features": image_features(probe, pixels)}
    rows = [(label, False) for label in LEARNERS] + [(label, True) for label in LEARNERS] + [(label, False) for label in OTHERS]
    if args.skip_pixels:
        rows = [row for row in rows if {**LEARNERS, **OTHERS}[row[0]][2] == "features"]
    if args.rows:
        unknown = set(args.rows) - {row_name(*row) for row in rows}
        if unknown:
            parser.error(f"--rows: unknown rows {sorted(unknown)}; rows: {[row_name(*row) for row in rows]}")
        rows = [row for row in rows if row_name(*row) in args.rows]
    row_seconds: dict[str, float] = {}
    results: dict[str, list] = {"zero-shot CLIP": []}
    prompts: dict[str, str] = {}
    start = time.perf_counter()
    for seed in tqdm(args.seeds, desc="seeds"):
        pixels, labels, attributes = conceptworld("base_train", seed, args.shots)
        train_data = {"pixels": pixels, "labels": labels, "attributes": attributes, "features": image_features(probe, pixels)}
        with probe.disable_adapter():  # zero-shot CLIP: the hand-crafted template
            zero_shot = [accuracy(probe, test["base"], "features")]
            probe.base_model.set_class_names(novel_names)
            zero_shot.append(accuracy(probe, test["novel"], "features"))
            probe.base_model.set_class_names(base_names)
        results["zero-shot CLIP"].append((*zero_shot, float("nan")))
        for label, ipl in rows:
            kind = {**LEARNERS, **OTHERS}[label][2]
            name = row_name(label, ipl)
            row_start = time.perf_counter()
            torch.manual_seed(seed)
            model = build(label, ipl_settings if ipl else None, base_names)
            steps, batch, lr = ((args.steps, args.batch_size, args.lr) if kind == "features"
                                else (args.intcoop_steps, args.intcoop_batch_size, args.intcoop_lr))  # fmt: skip
            train(model, train_data, kind, steps, batch, lr, seed)
            base_accuracy = accuracy(model, test["base"], kind)
            share, prompt = readability(model)
            prompts.setdefault(name, prompt)
            model.base_model.set_class_names(novel_names)
            results.setdefault(name, []).append((base_accuracy, accuracy(model, test["novel"], kind), share))
            row_seconds.setdefault(name, time.perf_counter() - row_start)
        if seed == args.seeds[0]:
            seed_seconds = time.perf_counter() - start
            tqdm.write(f"seed {seed}: {seed_seconds:.0f} s ("
                       + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in row_seconds.items())
                       + f"); estimated total for {len(args.seeds)} seeds: {seed_seconds * len(args.seeds) / 60:.1f} min")  # fmt: skip

    print(f"\nConceptWorld base-to-novel: {len(base_names)} base / {len(novel_names)} novel classes, {args.shots} shots, "
          f"{args.steps} steps on features / {args.intcoop_steps} on pixels, seeds {args.seeds}; IPL: "
          f"{args.ipl_vocabulary} candidate words, {args.ipl_prefilter} scored per step; tiny CLIP shipped with "
          f"peft-interp ({time.perf_counter() - start:.0f} s)\n")  # fmt: skip
    print("| method | base | novel | HM | readable tokens |\n|---|---|---|---|---|")
    spread = lambda values: statistics.stdev(values) if len(values) > 1 else 0.0  # noqa: E731
    for name, runs in results.items():
        base, novel, share = ([run[i] for run in runs] for i in range(3))
        readable = "-" if math.isnan(share[0]) else f"{100 * statistics.mean(share):.0f}%"
        print(f"| {name} | {100 * statistics.mean(base):.1f} ± {100 * spread(base):.1f} "
              f"| {100 * statistics.mean(novel):.1f} ± {100 * spread(novel):.1f} "
              f"| {100 * harmonic_mean(statistics.mean(base), statistics.mean(novel)):.1f} | {readable} |")  # fmt: skip
    print(f"\n(chance: base {100 / len(base_names):.1f}, novel {100 / len(novel_names):.1f}; readable tokens: the share of "
          "prompt tokens that are a selected word or whose learnt vector's nearest token is a readable word)\n")  # fmt: skip
    print(f"Readable prompts (seed {args.seeds[0]}; [w] = nearest word of a learnt vector):")
    for name, prompt in prompts.items():
        print(f"  {name}: {prompt}")


if __name__ == "__main__":
    main()
