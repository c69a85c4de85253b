"""Explanations people can look at: one PNG per image and a self-contained HTML page, for any peft-interp model.

:func:`write_explanations` calls the tuner's ``explain`` (every method returns a
:class:`~peft_interp.tuners.explanation.Explanation`) and draws what the explanation holds, whatever the method:

* always, per image ``image_{i}.png``: the image with its true and predicted class (misclassified images framed in
  red and marked WRONG) and bars: each concept's contribution to the predicted class's logit when the explanation
  has ``contributions``, else the most probable classes in percent;
* when it has ``maps``: in the same picture, the concepts drawn on the image (distinct colours on a grey copy of the
  image, with outlines and a legend) and one map per concept on a shared 0-1 colour scale;
* when it has a ``prompt``: the learnt prompt read as words, on the page as text (with each word's similarity and
  what it means), and, when true labels are given, the decoded-prompt faithfulness on the explained images; a
  prompt of real words and learnt vectors (IPL's hybrid prompt) is drawn position by position in the model's order,
  the words as themselves (similarity 1.00), each learnt vector as its nearest readable word in another style with
  its similarity under it;
* when it has ``image_notes``: those lines under the image's picture.

The page (``index.html``) shows one picture per row, each enlarges on click, and ends with a glossary of the terms
used. :func:`sample_indices` picks the images to explain across classes by seed (or only misclassified ones).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import numpy as np
import torch
from torch import nn

from .tuners.base import InterpTuner
from .tuners.explanation import WEAK_SIMILARITY, Explanation, PromptPosition
from .visualization import RIGHT_COLOR, concept_color, explanation_figure, save_figure

TOP_K = 5  # class probabilities shown per image when there are no concept contributions

Figure = tuple[str, str]  # (png file name, caption; lines separated by "\n")
Section = tuple[str, list[Figure]]  # (heading, figures)
SummaryItem = str | list[PromptPosition]  # a line of text, or a prompt drawn position by position

GLOSSARY = {
    "probability": "softmax of the class scores (logits), in percent; the bars list the most probable classes.",
    "WRONG": "the predicted class is not the true class; the picture is framed in red.",
    "concept map": "for each image patch, the share (0-1) the model gives to the concept; the concepts and the "
    "background share every patch. Concepts on the image: each patch coloured by its largest share.",
    "contribution": "a concept's additive part of the predicted class's logit (class score before softmax); the "
    "bars of an image sum to that logit. Positive: the concept speaks for the class.",
    "prompt token map": "VPT-deep has no concepts; each prompt token's map is the softmax over prompt tokens of its "
    "cosine similarity with each patch feature of the last block, a stand-in for where it attends.",
    "readable prompt": "the learnt context vectors read as words; [class] marks where the class name goes.",
    "prompt as the model reads it": "the hybrid prompt position by position, in order: a selected word (bold, solid "
    "frame) is that word's frozen token embedding, exact (similarity 1.00); a learnt vector (italic, dashed frame) is "
    "shown as its nearest readable word, with the cosine similarity under it. In text: [w] is a learnt vector read as w.",
    "nearest tokens": "each context vector's closest token (Euclidean) in the whole CLIP vocabulary, word pieces "
    "included: what CoOp-style decoding reports.",
    "similarity": "cosine between a learnt vector and its word's embedding: 1.00 means the vector is the word; low "
    "values mean the word is only the nearest of many unrelated ones.",
    "decoded-prompt faithfulness": "accuracy on the explained images when the learnt vectors are replaced by the "
    "embeddings of their words (a hybrid prompt keeps its selected words), next to the accuracy of the learnt "
    "vectors: equal numbers mean the words say what the model does.",
}


@dataclass
class Report:
    """What :func:`explanation_report` made: lines under the page title, figures, glossary terms used."""

    summary: list[SummaryItem] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    terms: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------------------ sampling
def sample_indices(
    labels: Sequence[int],
    count: int,
    seed: int = 0,
    predictions: Sequence[int] | None = None,
    misclassified: bool = False,
) -> list[int]:
    """``count`` dataset indices spread over the classes: each class's indices are shuffled by ``seed``, the classes
    visited in a seeded order, one index per class per round, until ``count`` are taken (fewer if the data has fewer).

    Args:
        labels: the true class of every image.
        predictions: the predicted class of every image (needed for ``misclassified``).
        misclassified: sample only images whose prediction differs from the label.
    """
    if count < 1:
        raise ValueError(f"`count` must be at least 1, got {count}.")
    labels = [int(label) for label in labels]
    candidates = list(range(len(labels)))
    if misclassified:
        if predictions is None or len(predictions) != len(labels):
            raise ValueError("`misclassified=True` needs one prediction per label.")
        candidates = [i for i in candidates if int(predictions[i]) != labels[i]]
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[int]] = {}
    for index in candidates:
        by_class.setdefault(labels[index], []).append(index)
    queues = [list(rng.permutation(by_class[label])) for label in sorted(by_class)]
    queues = [queues[i] for i in rng.permutation(len(queues))]
    picked: list[int] = []
    while len(picked) < count and any(queues):
        for queue in queues:
            if queue and len(picked) < count:
                picked.append(int(queue.pop(0)))
    return picked


# --------------------------------------------------------------------------------------------------- text lines
def image_header(probabilities: torch.Tensor, class_names: Sequence[str], label: int | None) -> str:
    """``"true: cat\\npredicted: dog (81.2%)"`` (no first line when the true class is unknown)."""
    predicted = int(probabilities.argmax())
    lines = [] if label is None else [f"true: {class_names[label]}"]
    lines.append(f"predicted: {class_names[predicted]} ({100 * float(probabilities[predicted]):.1f}%)")
    return "\n".join(lines)


def prediction_bars(
    probabilities: torch.Tensor, class_names: Sequence[str], label: int | None, k: int = TOP_K
) -> tuple[list[str], list[float], list, str, str]:
    """Bars of the ``k`` most probable classes in percent, best first; the true class green, others grey."""
    top = probabilities.float().topk(min(k, len(probabilities)))
    indices = top.indices.tolist()
    colors = [RIGHT_COLOR if index == label else "#9E9E9E" for index in indices]
    return [class_names[i] for i in indices], [100 * v for v in top.values.tolist()], colors, "class probability", "%"


def contribution_bars(
    explanation: Explanation, index: int, class_names: Sequence[str]
) -> tuple[list[str], list[float], list, str, str]:
    """Bars of each concept's contribution to the predicted class's logit, in concept colours."""
    predicted = int(explanation.predictions[index])
    values = explanation.contributions[index].float().tolist()
    logit = float(explanation.logits[index, predicted])
    title = f"contributions to the logit of '{class_names[predicted]}' ({logit:+.2f})"
    names = list(explanation.map_names or [f"concept {n}" for n in range(len(values))])
    return names, values, [concept_color(n) for n in range(len(values))], title, ""


def caption_lines(probabilities: torch.Tensor, class_names: Sequence[str], label: int | None, k: int = 3) -> list[str]:
    """``"true: <name>"`` (when known), then the ``k`` most probable classes with their percentage."""
    top = probabilities.float().topk(min(k, len(probabilities)))
    lines = [] if label is None else [f"true: {class_names[label]}"]
    for rank, (probability, index) in enumerate(zip(top.values.tolist(), top.indices.tolist()), start=1):
        lines.append(f"{rank}. {class_names[index]}: {100 * probability:.1f}%")
    return lines


def faithfulness_lines(tuner: InterpTuner, pixel_values: torch.Tensor, labels: Sequence[int] | None) -> list[str]:
    """The decoded-prompt faithfulness on the explained images
    (:func:`peft_interp.prompt_metrics.decoded_prompt_faithfulness`) as one line; a line saying why when it cannot be
    measured."""
    from .prompt_metrics import decoded_prompt_faithfulness

    if labels is None:
        return ["decoded-prompt faithfulness: needs the true classes of the images"]
    try:
        result = decoded_prompt_faithfulness(tuner, pixel_values, torch.as_tensor(list(labels)))
    except ValueError as error:
        return [f"decoded-prompt faithfulness: not measured ({error})"]
    return [
        f"decoded-prompt faithfulness on these {len(labels)} images: accuracy {100 * result.decoded_accuracy:.1f}% "
        f"with the readable words vs {100 * result.continuous_accuracy:.1f}% with the learnt vectors",
        f"  decoded prompt measured: {result.decoded_prompt.replace('{}', '[class]')}",
    ]


# ---------------------------------------------------------------------------------------------------- renderer
def explanation_report(
    tuner: InterpTuner,
    explanation: Explanation,
    pixel_values: torch.Tensor,
    images: np.ndarray,
    labels: list[int] | None,
    class_names: list[str],
    output_dir: Path,
) -> Report:
    """Draw ``image_{i}.png`` for every image from what ``explanation`` holds; return the page's text."""
    report = Report(terms=["probability"])
    probabilities = explanation.logits.float().softmax(dim=-1).cpu()
    has_maps = explanation.maps is not None
    if has_maps:
        report.terms.append("concept map" if explanation.contributions is not None else "prompt token map")
        report.summary.append(f"concepts: {', '.join(explanation.map_names or [])}")
    if explanation.contributions is not None:
        report.terms.append("contribution")
    if explanation.prompt is not None:
        prompt = explanation.prompt
        if prompt.positions is not None:  # drawn position by position, not as the text lines of the positions
            report.summary.append(list(prompt.positions))
            report.terms.append("prompt as the model reads it")
        else:
            report.terms.append("readable prompt")
        report.summary += prompt.lines(with_positions=False)
        report.terms += ["similarity"] + (["nearest tokens"] if prompt.nearest else [])
        if explanation.prompt.readable is not None:
            report.summary += faithfulness_lines(tuner, pixel_values, labels)
            report.terms.append("decoded-prompt faithfulness")
    for i, image in enumerate(images):
        label = None if labels is None else labels[i]
        predicted = int(explanation.predictions[i])
        wrong = None if label is None else predicted != label
        if explanation.contributions is not None:
            bars = contribution_bars(explanation, i, class_names)
        else:
            bars = prediction_bars(probabilities[i], class_names, label)
        notes = explanation.image_notes[i] if explanation.image_notes is not None else []
        figure = explanation_figure(
            image,
            image_header(probabilities[i], class_names, label),
            wrong,
            bars,
            maps=explanation.maps[i].float().cpu() if has_maps else None,
            map_names=explanation.map_names,
            background=explanation.background[i].float().cpu() if explanation.background is not None else None,
            notes=notes,
        )
        filename = f"image_{i}.png"
        save_figure(figure, output_dir / filename)
        caption = caption_lines(probabilities[i], class_names, label) + list(notes)
        if wrong:
            caption.insert(0, "WRONG")
        report.figures.append((filename, "\n".join(caption)))
    if any(caption.startswith("WRONG") for _, caption in report.figures):
        report.terms.append("WRONG")
    return report


# --------------------------------------------------------------------------------------------------------- html
PAGE_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1400px; padding: 0 1em; color: #222; }
ul.summary { list-style: none; padding: 0; }
ul.summary li { margin: 0.25em 0; font-family: ui-monospace, monospace; white-space: pre-wrap; }
.figures { display: flex; flex-direction: column; gap: 1.5em; }
figure { margin: 0; border: 1px solid #ddd; padding: 0.6em; background: #fff; }
figure.wrong { border: 3px solid #C0392B; }
figure img { max-width: 100%; height: auto; cursor: zoom-in; }
figcaption { font-size: 0.95em; margin-top: 0.4em; }
.lightbox { display: none; position: fixed; inset: 0; background: rgba(0, 0, 0, 0.85); z-index: 10;
            align-items: center; justify-content: center; cursor: zoom-out; }
.lightbox:target { display: flex; }
.lightbox img { max-width: 96vw; max-height: 96vh; background: #fff; }
dl.glossary dt { font-weight: bold; margin-top: 0.6em; }
dl.glossary dd { margin-left: 1.5em; }
ul.summary li.prompt { font-family: system-ui, sans-serif; white-space: normal; margin: 0.8em 0; }
.prompt-label { font-weight: bold; margin-bottom: 0.3em; }
.positions { display: flex; flex-wrap: wrap; gap: 0.35em; align-items: flex-start; }
.position { display: inline-flex; flex-direction: column; align-items: center; min-width: 3.5em;
            padding: 0.25em 0.5em; border-radius: 4px; }
.position .text { font-size: 1.15em; }
.position .similarity, .position .note { font-size: 0.75em; color: #555; font-style: normal; font-weight: normal; }
.position.word { border: 2px solid #2E7D32; background: #E8F5E9; font-weight: bold; }
.position.learnt { border: 1px dashed #888; font-style: italic; color: #444; }
.position.learnt.weak .text { color: #9E9E9E; }
.position.slot { border: 1px solid #ddd; background: #F5F5F5; color: #666; }
.prompt-legend { font-size: 0.85em; color: #555; margin-top: 0.3em; }
"""


def _escaped_lines(text: str) -> str:
    return "<br>".join(html.escape(line) for line in text.split("\n"))


def _position_html(position: PromptPosition) -> str:
    similarity = "" if position.similarity is None else f"{position.similarity:.2f}"
    weak = position.kind == "learnt" and position.similarity is not None and position.similarity < WEAK_SIMILARITY
    return (
        f'<span class="position {html.escape(position.kind, quote=True)}{" weak" if weak else ""}">'
        f'<span class="text">{html.escape(position.text)}</span>'
        f'<span class="similarity">{similarity or "&nbsp;"}</span>'
        f'<span class="note">{html.escape(position.note)}</span></span>'
    )


def _prompt_html(positions: Sequence[PromptPosition]) -> str:
    """A prompt drawn position by position, in order: words framed solid, learnt vectors dashed and italic."""
    return (
        '<li class="prompt"><div class="prompt-label">prompt as the model reads it</div>'
        f'<div class="positions">{"".join(_position_html(position) for position in positions)}</div>'
        '<div class="prompt-legend">bold, solid frame: a real word (its frozen token embedding; similarity 1.00). '
        "Italic, dashed frame: a learnt vector, shown as its nearest readable word; the number under it is their "
        f"cosine similarity (grey word: below {WEAK_SIMILARITY}, the word says little about the vector).</div></li>"
    )


def _summary_html(item: SummaryItem) -> str:
    return f"<li>{html.escape(item)}</li>" if isinstance(item, str) else _prompt_html(item)


def _figure_html(number: int, filename: str, caption: str) -> str:
    source = html.escape(quote(filename), quote=True)
    alt = html.escape(caption.split("\n")[0], quote=True)
    css = ' class="wrong"' if caption.startswith("WRONG") else ""
    return (
        f'<figure{css}><a href="#enlarged-{number}"><img src="{source}" alt="{alt}"></a>'
        f"<figcaption>{_escaped_lines(caption)}</figcaption></figure>"
        f'<a class="lightbox" id="enlarged-{number}" href="#_"><img src="{source}" alt="{alt}"></a>'
    )


def write_index(
    output_dir: str | Path,
    title: str,
    sections: Sequence[Section],
    summary: Sequence[SummaryItem] = (),
    glossary: dict[str, str] | None = None,
) -> Path:
    """Write ``index.html`` into ``output_dir``: the title, ``summary`` lines, per section its heading and its
    figures one per row (relative ``<img src>``, click to enlarge, captions starting with ``WRONG`` framed red),
    then the ``glossary``. All text is HTML-escaped. Returns the page's path.

    Args:
        sections: ``(heading, [(png file name relative to output_dir, caption), ...])``; captions may hold ``\\n``.
        summary: lines under the title (method, readable prompt, concept names ...); an item that is a list of
            :class:`~peft_interp.tuners.explanation.PromptPosition` is a prompt, drawn position by position.
        glossary: term -> one-line meaning.
    """
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{PAGE_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if summary:
        parts.append('<ul class="summary">' + "".join(_summary_html(item) for item in summary) + "</ul>")
    number = 0
    for heading, figures in sections:
        parts.append(f'<section><h2>{html.escape(heading)}</h2><div class="figures">')
        for filename, caption in figures:
            parts.append(_figure_html(number, filename, caption))
            number += 1
        parts.append("</div></section>")
    if glossary:
        items = "".join(f"<dt>{html.escape(t)}</dt><dd>{html.escape(m)}</dd>" for t, m in glossary.items())
        parts.append(f'<section><h2>Glossary</h2><dl class="glossary">{items}</dl></section>')
    parts.append("</body></html>")
    path = Path(output_dir) / "index.html"
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return path


# ----------------------------------------------------------------------------------------------------- entry point
def resolve_tuner(model: nn.Module) -> InterpTuner:
    """The peft-interp tuner of a ``PeftModel`` (its ``base_model``), or ``model`` itself if it is one."""
    if isinstance(model, InterpTuner):
        return model
    tuner = getattr(model, "base_model", None)
    if isinstance(tuner, InterpTuner):
        return tuner
    raise TypeError(f"Expected a PeftModel of a peft-interp method or its tuner, got {type(model).__name__}.")


def method_name(tuner: InterpTuner) -> str:
    """The registered method name of the active adapter (e.g. ``"ivpt"``), else the tuner's class name."""
    config = tuner.peft_config[tuner.active_adapters[0]]
    return getattr(config, "method_name", "") or type(tuner).__name__


def resolve_class_names(tuner: InterpTuner, num_classes: int, class_names: Sequence[str] | None) -> list[str]:
    """``class_names`` if given, else the adapter config's, else ``class 0 ...``; checked against the logits."""
    if class_names is None:
        class_names = getattr(tuner.peft_config[tuner.active_adapters[0]], "class_names", None)
    names = list(class_names) if class_names is not None else [f"class {c}" for c in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"Got {len(names)} class names for a model with {num_classes} classes.")
    return names


def _num_classes(tuner: InterpTuner) -> int:
    config = tuner.peft_config[tuner.active_adapters[0]]
    names = getattr(config, "class_names", None)
    return config.num_classes if getattr(config, "num_classes", None) else len(names)


def _first_uint8_images(images, count: int) -> np.ndarray:
    """``(N, H, W, 3)`` uint8 (numpy or torch), first ``count``."""
    array = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if array.ndim != 4 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise ValueError(f"`images` must be uint8 (N, H, W, 3), got {array.dtype} {tuple(array.shape)}.")
    return array[:count]


def explain_in_eval_mode(model: nn.Module, tuner: InterpTuner, pixel_values: torch.Tensor) -> Explanation:
    """``tuner.explain(pixel_values)`` in eval mode without autograd; each module's mode is restored afterwards."""
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            return tuner.explain(pixel_values)
    finally:
        for module, training in modes.items():
            module.training = training


def write_explanations(
    model: nn.Module,
    pixel_values: torch.Tensor,
    images,
    output_dir: str | Path,
    labels: torch.Tensor | Sequence[int] | None = None,
    class_names: Sequence[str] | None = None,
    max_images: int = 6,
    title: str | None = None,
) -> Path:
    """Write one PNG per image (the first ``max_images``) and an ``index.html`` showing them.

    Args:
        model: a ``PeftModel`` of any peft-interp method, or its tuner (``peft_model.base_model``).
        pixel_values: ``(N, 3, S, S)`` model input.
        images: ``(N, H, W, 3)`` uint8 RGB of the same images, for display.
        output_dir: created if missing.
        labels: ``N`` true classes: marks misclassified images and measures the decoded-prompt faithfulness.
        class_names: names of the model's classes (default: the adapter config's, else ``class c``).
        title: page title (default ``"<method> explanations"``).

    Returns:
        The path of ``index.html``.
    """
    tuner = resolve_tuner(model)
    if len(images) != len(pixel_values):
        raise ValueError(f"`images` has {len(images)} images but `pixel_values` has {len(pixel_values)}.")
    count = min(max_images, len(pixel_values))
    names = resolve_class_names(tuner, _num_classes(tuner), class_names)
    shown = _first_uint8_images(images, count)
    label_list = None if labels is None else [int(label) for label in labels][:count]
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    pixels = pixel_values[:count]
    explanation = explain_in_eval_mode(model, tuner, pixels)
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            report = explanation_report(tuner, explanation, pixels, shown, label_list, names, output_dir)
    finally:
        for module, training in modes.items():
            module.training = training
    method = method_name(tuner)
    glossary = {term: GLOSSARY[term] for term in dict.fromkeys(report.terms)}
    summary = [f"method: {method}", *report.summary]
    return write_index(output_dir, title or f"{method} explanations", [("images", report.figures)], summary, glossary)


# ------------------------------------------------------------------------------------------------------ galleries
def concept_crop(image: np.ndarray, concept_map: torch.Tensor, size: int = 224, fraction: float = 0.1) -> np.ndarray:
    """``(h, w, 3)`` float RGB: the square crop of the image around the concept's strongest ``fraction`` of patches
    (their bounding box, one patch of margin), the rest of the crop kept as context.

    Args:
        image: ``(H, W, 3)`` uint8.
        concept_map: ``(h, w)``.
    """
    from .evaluation.deletion import top_patch_masks
    from .visualization import _square_pixels

    grid_h, grid_w = concept_map.shape
    rows, columns = top_patch_masks(concept_map[None, None].float(), fraction)[0, 0].nonzero(as_tuple=True)
    top, bottom = max(int(rows.min()) - 1, 0), min(int(rows.max()) + 2, grid_h)
    left, right = max(int(columns.min()) - 1, 0), min(int(columns.max()) + 2, grid_w)
    pixels = _square_pixels(image, size) / 255.0
    scale_y, scale_x = size / grid_h, size / grid_w
    return pixels[round(top * scale_y) : round(bottom * scale_y), round(left * scale_x) : round(right * scale_x)]


def explain_all(model: nn.Module, pixel_values: torch.Tensor, batch_size: int = 64) -> Explanation:
    """The explanation of every image (batch by batch, eval mode): ``logits``, ``predictions``, ``maps`` and
    ``contributions`` concatenated (the fields galleries read)."""
    tuner = resolve_tuner(model)
    parts = [explain_in_eval_mode(model, tuner, pixel_values[start : start + batch_size])
             for start in range(0, len(pixel_values), batch_size)]  # fmt: skip

    def joined(name: str):
        values = [getattr(part, name) for part in parts]
        return None if values[0] is None else torch.cat([value.float().cpu() for value in values])

    return Explanation(
        logits=joined("logits"),
        predictions=torch.cat([part.predictions.cpu() for part in parts]),
        maps=joined("maps"),
        map_names=parts[0].map_names,
        contributions=joined("contributions"),
    )


def _short(text: str, width: int = 22) -> str:
    """``text`` wrapped on at most two lines of ``width`` characters (``...`` when longer)."""
    import textwrap

    return "\n".join(textwrap.wrap(text, width, max_lines=2, placeholder="..."))


def write_concept_gallery(
    model: nn.Module,
    pixel_values: torch.Tensor,
    images,
    output_dir: str | Path,
    labels: torch.Tensor | Sequence[int] | None = None,
    class_names: Sequence[str] | None = None,
    top_k: int = 6,
    title: str | None = None,
) -> Path:
    """Concept galleries, the way prototype papers show their prototypes ("this looks like that"): per concept,
    ``concept_{n}.png`` with crops of the ``top_k`` images where its map peaks highest; per class (methods with
    contributions), ``classes.png``: the mean contribution of each concept to the logit of the images predicted as
    that class. Written with an ``index.html``; returns its path.

    Args:
        model: a ``PeftModel`` (or tuner) whose explanation has ``maps`` (IVPT, VPT-deep).
        pixel_values: ``(N, 3, S, S)`` model inputs (a dataset split); ``images``: the same as ``(N, H, W, 3)`` uint8.
        labels: ``N`` true classes, shown under the crops.
    """
    from .visualization import class_concept_figure, concept_gallery_figure

    tuner = resolve_tuner(model)
    if len(images) != len(pixel_values):
        raise ValueError(f"`images` has {len(images)} images but `pixel_values` has {len(pixel_values)}.")
    names = resolve_class_names(tuner, _num_classes(tuner), class_names)
    shown = _first_uint8_images(images, len(images))
    explanation = explain_all(model, pixel_values)
    if explanation.maps is None:
        raise ValueError(f"{type(tuner).__name__}'s explanations have no concept maps to make a gallery of.")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    concept_names = explanation.map_names or [f"concept {n}" for n in range(explanation.maps.shape[1])]
    peaks = explanation.maps.flatten(2).max(dim=-1).values  # (N, K)
    figures: list[Figure] = []
    for n, concept in enumerate(concept_names):
        best = peaks[:, n].topk(min(top_k, len(peaks))).indices.tolist()
        crops = [concept_crop(shown[i], explanation.maps[i, n]) for i in best]
        shown_as = [names[int(labels[i])] if labels is not None else f"image {i}" for i in best]
        captions = [f"{_short(name)}\npeak {peaks[i, n]:.2f}" for name, i in zip(shown_as, best)]
        save_figure(concept_gallery_figure(crops, captions, concept, concept_color(n)), output_dir / f"concept_{n}.png")
        figures.append((f"concept_{n}.png", f"{concept}: the {len(best)} images where it fires most"))
    sections: list[Section] = [("concepts", figures)]
    terms = ["concept map"]
    if explanation.contributions is not None:
        table = np.full((len(names), len(concept_names)), np.nan)  # NaN: no image predicted as the class
        predicted = explanation.predictions.numpy()
        for c in range(len(names)):
            if (predicted == c).any():
                table[c] = explanation.contributions[torch.as_tensor(predicted == c)].mean(dim=0).numpy()
        figure = class_concept_figure(table, names, concept_names, "which concepts carry each class's decisions "
                                      "(mean contribution over the images predicted as the class; —: no image "
                                      "predicted as the class)")  # fmt: skip
        save_figure(figure, output_dir / "classes.png")
        sections.append(("classes", [("classes.png", "mean contribution of each concept, per predicted class")]))
        terms.append("contribution")
    glossary = {term: GLOSSARY[term] for term in terms}
    glossary["peak"] = "the largest value of the concept's map on the image (0-1); crops are centred on its region."
    summary = [f"method: {method_name(tuner)}", f"{len(pixel_values)} images", f"concepts: {', '.join(concept_names)}"]
    return write_index(output_dir, title or f"{method_name(tuner)} concept gallery", sections, summary, glossary)
