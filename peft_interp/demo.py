"""``peft-interp demo``: the whole pipeline on the shipped backbones and ConceptWorld, offline, in minutes on a CPU.

1. Visual prompts on the shipped DINOv2: IVPT against the VPT-deep baseline, trained the same way (the trainer
   with IVPT's recipe, same steps and batch) on ConceptWorld's base classes, 16 images per class; scored on held-out
   images for accuracy and, from the ground-truth keypoints and part masks, part consistency, stability and
   concept-map alignment.
2. Text prompts on the shipped CLIP: IPL against the CoOp baseline (and zero-shot CLIP), trained on the base
   classes and evaluated on base and novel classes (harmonic mean), with IPL's readable prompt.
3. Explanation pictures for IVPT and IPL with an HTML page, the adapters saved as they would go to the Hub, and the
   results table printed and written to ``results.json`` / ``index.html``.
"""

from __future__ import annotations

import html
import json
import time
from pathlib import Path

import torch

from .pipeline import explain_rows, image_transform, method_config
from .tuners.explanation import position_prompt
from .tuners.ipl import HybridPromptDecoding

VISUAL = {"VPT-deep": "vpt_deep", "IVPT": "ivpt"}
TEXTUAL = {"CoOp": "coop", "IPL": "ipl"}
SHOTS, TEST_IMAGES_PER_CLASS, BATCH_SIZE = 16, 10, 32
DEFAULT_STEPS = {"visual": 400, "text": 300}
COLUMNS = ("method", "backbone", "trainable", "base acc", "novel acc", "HM", "consistency", "stability", "alignment",
           "train s")  # fmt: skip


def _conceptworld(split: str, seed: int, image_size: int, shots: int | None = None, per_class: int | None = None):
    from .data import class_names, load_conceptworld

    names = class_names(split)
    count = {"shots": shots} if shots else {"num_images": per_class * len(names)}
    return load_conceptworld(split, seed=seed, image_size=image_size, **count), names


def _train(backbone, config, dataset, transform, output_dir: Path, steps: int, seed: int):
    from peft import get_peft_model

    from .training import ImageCollator, InterpTrainer, TrainingArguments

    torch.manual_seed(seed)
    model = get_peft_model(backbone, config)
    args = TrainingArguments(str(output_dir), max_steps=steps, batch_size=BATCH_SIZE, seed=seed, logging_steps=25,
                             overwrite_output_dir=True)  # the demo re-runs into its own folders
    rows = dataset.select_columns(["image", "label"])  # decode only what the model reads
    result = InterpTrainer(model, args, rows, ImageCollator(transform)).train()
    return model.eval(), result.seconds


def _visual_rows(output_dir: Path, steps: int, seed: int) -> tuple[list[dict], dict]:
    from .data import PART_NAMES
    from .shipped import load_default
    from .training.data import ImageCollator
    from .evaluation.runner import evaluate_parts

    transform = image_transform(load_default("dinov2"))
    train, names = _conceptworld("base_train", seed, transform.image_size, shots=SHOTS)
    test, _ = _conceptworld("base_test", 1000 + seed, transform.image_size, per_class=TEST_IMAGES_PER_CLASS)
    collator, rows, models = ImageCollator(transform), [], {}
    for label, method in VISUAL.items():
        config = method_config(method, names, {"image_size": transform.image_size})
        model, seconds = _train(load_default("dinov2"), config, train, transform, output_dir / "runs" / method, steps, seed)
        if method == "ivpt":  # name the concepts after the ground-truth parts they cover on the training images
            _name_concepts(model, train, transform)
        scores = evaluate_parts(model, test, collator, part_names=list(PART_NAMES))  # accuracy included
        rows.append({"method": label, "backbone": "DINOv2 (shipped)", "trainable": model.get_nb_trainable_parameters()[0],
                     "base acc": scores["accuracy"], "consistency": scores["consistency"],
                     "stability": scores["stability"], "alignment": scores["alignment"], "train s": seconds})  # fmt: skip
        models[label] = (model, scores)
    return rows, {"models": models, "test": test, "transform": transform, "names": names}


def _name_concepts(model, train, transform) -> None:
    from . import name_concepts
    from .data import PART_NAMES
    from .training.data import ImageCollator

    rows = train.select_columns(["image", "label"])
    pixels = ImageCollator(transform)([rows[i] for i in range(len(rows))])["pixel_values"]
    masks = train.select_columns(["part_masks"]).with_format("torch")[:]["part_masks"].long()
    name_concepts(model, pixels, part_masks=masks, part_names=PART_NAMES)


def _text_rows(output_dir: Path, steps: int, seed: int) -> tuple[list[dict], dict]:
    from .shipped import load_default
    from .training.data import ImageCollator
    from .evaluation.runner import evaluate_base_to_novel

    transform = image_transform(load_default("clip"))
    train, base_names = _conceptworld("base_train", seed, transform.image_size, shots=SHOTS)
    base_test, _ = _conceptworld("base_test", 1000 + seed, transform.image_size, per_class=TEST_IMAGES_PER_CLASS)
    novel_test, novel_names = _conceptworld("novel_test", 1000 + seed, transform.image_size, per_class=TEST_IMAGES_PER_CLASS)
    collator, rows, models = ImageCollator(transform), [], {}
    for label, method in TEXTUAL.items():
        config = method_config(method, base_names, {"cache_image_features": True})
        model, seconds = _train(load_default("clip"), config, train, transform, output_dir / "runs" / method, steps, seed)
        scores = evaluate_base_to_novel(model, base_test, novel_test, novel_names, collator)
        rows.append({"method": label, "backbone": "CLIP (shipped)", "trainable": model.get_nb_trainable_parameters()[0],
                     "base acc": scores["base"], "novel acc": scores["novel"], "HM": scores["hm"], "train s": seconds})  # fmt: skip
        models[label] = (model, scores)
        if label == "CoOp":  # the same model with its adapter switched off is zero-shot CLIP ("a photo of a {}.")
            with model.disable_adapter():
                zero_shot = evaluate_base_to_novel(model, base_test, novel_test, novel_names, collator)
    rows.insert(0, {"method": "zero-shot CLIP", "backbone": "CLIP (shipped)", "trainable": 0, "base acc": zero_shot["base"],
                    "novel acc": zero_shot["novel"], "HM": zero_shot["hm"], "train s": 0.0})  # fmt: skip
    return rows, {"models": models, "test": base_test, "transform": transform, "names": base_names}


def _explain(label: str, context: dict, output_dir: Path, count: int = 6) -> Path:
    from .reports import sample_indices

    model, _ = context["models"][label]
    rows = context["test"].select(sample_indices(context["test"]["label"], count, seed=0))
    return explain_rows(model, rows, context["transform"], output_dir / label.lower(), context["names"],
                        title=f"{label} on ConceptWorld")  # fmt: skip


def _format(value, column: str) -> str:
    if value is None:
        return "—"
    if column in ("base acc", "novel acc", "HM", "consistency", "stability", "alignment"):  # percent
        return f"{value:.1f}"
    if column == "trainable":
        return f"{value:,}"
    if column == "train s":
        return f"{value:.0f}"
    return str(value)


def markdown_table(rows: list[dict]) -> str:
    """The demo table as Markdown (for the README, from a run's ``results.json``)."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_format(row.get(column), column) for column in COLUMNS) + " |" for row in rows]
    return "\n".join(lines)


def format_table(rows: list[dict]) -> str:
    cells = [[_format(row.get(column), column) for column in COLUMNS] for row in rows]
    widths = [max(len(column), *(len(line[i]) for line in cells)) for i, column in enumerate(COLUMNS)]
    lines = [" | ".join(column.ljust(width) for column, width in zip(COLUMNS, widths))]
    lines.append("-+-".join("-" * width for width in widths))
    lines += [" | ".join(cell.ljust(width) for cell, width in zip(line, widths)) for line in cells]
    return "\n".join(lines)


def _prompt_as_read(decoding) -> str:
    """IPL's prompt on one line: its selected words as themselves, each learnt vector as ``[nearest readable word]``
    (the hybrid prompt's positions), or the readable prompt of the coverage/anchor variant."""
    return position_prompt(decoding.positions) if isinstance(decoding, HybridPromptDecoding) else decoding.prompt


def _write_index(output_dir: Path, rows: list[dict], pages: dict[str, Path], notes: list[str]) -> Path:
    header = "".join(f"<th>{html.escape(column)}</th>" for column in COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_format(row.get(c), c))}</td>" for c in COLUMNS) + "</tr>"
                   for row in rows)  # fmt: skip
    links = "".join(f'<li><a href="{html.escape(str(page.relative_to(output_dir)))}">{html.escape(label)}</a></li>'
                    for label, page in pages.items())  # fmt: skip
    items = "".join(f"<li>{html.escape(note)}</li>" for note in notes)
    page = (
        "<!doctype html><meta charset='utf-8'><title>peft-interp demo</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:4px 10px;border-bottom:1px solid #ddd}</style>"
        f"<h1>peft-interp demo on ConceptWorld</h1><table><tr>{header}</tr>{body}</table><ul>{items}</ul>"
        f"<h2>Explanations</h2><ul>{links}</ul>"
    )
    index = output_dir / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


def run_demo(output_dir: Path, steps: int | None = None, seed: int = 0) -> list[dict]:
    from .data import class_names
    from .sharing import save_for_hub

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    visual_steps, text_steps = steps or DEFAULT_STEPS["visual"], steps or DEFAULT_STEPS["text"]
    print(f"ConceptWorld: {len(class_names('base_train'))} base / {len(class_names('novel_train'))} novel classes, "
          f"{SHOTS} training images per class, {TEST_IMAGES_PER_CLASS} test images per class\n")  # fmt: skip
    visual_rows, visual = _visual_rows(output_dir, visual_steps, seed)
    text_rows, text = _text_rows(output_dir, text_steps, seed)
    rows = visual_rows + text_rows

    pages = {"IVPT concept maps": _explain("IVPT", visual, output_dir), "IPL readable prompt": _explain("IPL", text, output_dir)}
    for label, context in (("IVPT", visual), ("IPL", text)):
        model, scores = context["models"][label]
        save_for_hub(model, output_dir / "adapters" / label.lower(), repo_id=f"{label.lower()}-conceptworld",
                     metrics={k: v for k, v in scores.items() if isinstance(v, float)}, dataset="conceptworld")  # fmt: skip
    readable = _prompt_as_read(text["models"]["IPL"][0].base_model.explain_prompt())
    notes = [
        f"visual methods: {visual_steps} steps, text methods: {text_steps} steps, batch {BATCH_SIZE}, seed {seed}",
        "accuracy on held-out images of the base classes; novel acc: unseen classes by name only (CLIP methods)",
        (
            "consistency / stability: EvalProtoPNet protocol on ConceptWorld keypoints (IVPT: the 11-prototype "
            "level; VPT-deep: prompt-token similarity maps); alignment: share of concept-map mass in its best part"
        ),
        f"IPL's prompt as the model reads it ([w]: a learnt vector, shown as its nearest readable word): {readable!r}",
        f"chance: {100 / len(visual['names']):.1f}%; every accuracy-like figure is a percentage (0-100)",
    ]
    (output_dir / "results.json").write_text(json.dumps({"rows": rows, "notes": notes}, indent=2))
    index = _write_index(output_dir, rows, pages, notes)

    print("\n" + format_table(rows))
    for note in notes:
        print(f"  - {note}")
    print(f"\nresults: {output_dir / 'results.json'}\npictures: {index}\nadapters: {output_dir / 'adapters'}")
    print(f"total time: {time.perf_counter() - start:.0f} s")
    return rows
