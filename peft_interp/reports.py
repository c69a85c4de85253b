"""Explanations people can look at: PNG figures and a self-contained HTML page for any peft-interp model.

:func:`write_explanations` runs a model on a few images and writes, into one folder, what its method can show:

* IVPT: per image ``image_{i}_concepts.png`` (the final concept maps as a coloured overlay with a legend, one heat
  map per concept, the top class probabilities) and ``image_{i}_scores.png`` (each concept's contribution to the
  predicted class's logit);
* CLIP prompt methods (CoOp, IPL, IntCoOp, DualViewMI): ``prompt.png`` with the readable prompt (DualViewMI adds
  the view similarity and the MI bound), and per image ``image_{i}.png`` with the top class probabilities
  (IntCoOp adds the predicted attribute words);
* any other method (e.g. VPT-deep): per image ``image_{i}.png`` with the top class probabilities;

then ``index.html`` linking them. Which renderer runs is looked up in :data:`RENDERERS` by the tuner's class (the
most specific class of its MRO that has an entry). The text of every figure comes from small functions that
return lines (:func:`prediction_lines`, :func:`prompt_lines`, ...), so it can be checked without reading pixels.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import numpy as np
import torch
from torch import nn

from .tuners.base import InterpTuner
from .tuners.clip_prompt.model import ClipPromptTuner, ContextDecoding
from .tuners.clip_prompt.vocabulary import token_words
from .tuners.dualview_mi.model import DualViewMIModel
from .tuners.intcoop.model import IntCoOpModel
from .tuners.ipl.model import IPLModel
from .tuners.ivpt.model import IVPTExplanation, IVPTModel
from .visualization import (
    captioned_figure,
    concept_map_panel,
    concept_overlay,
    concept_score_chart,
    stack_panels,
    text_figure,
)

TOP_K = 3  # class probabilities shown per image
FIGURE_TILE = 224  # width of captioned image figures, px
OVERLAY_TILE = 192  # side of the IVPT overlay, px
HEATMAP_TILE = 96  # side of each IVPT heat-map tile, px
PROMPT_WIDTH = 480  # width of prompt.png, px

Figure = tuple[str, str]  # (png file name, caption; lines separated by "\n")
Section = tuple[str, list[Figure]]  # (heading, figures)


@dataclass
class ExplanationBatch:
    """The images a report explains.

    Args:
        pixel_values: ``(B, 3, S, S)`` model input.
        images: ``(B, H, W, 3)`` uint8 RGB, for display.
        labels: ``B`` true classes, or ``None``.
        class_names: the ``C`` class names, in logit order.
        output_dir: the folder the figures are written to.
    """

    pixel_values: torch.Tensor
    images: np.ndarray
    labels: list[int] | None
    class_names: list[str]
    output_dir: Path

    def label(self, index: int) -> int | None:
        return None if self.labels is None else self.labels[index]


@dataclass
class Report:
    """What a renderer wrote: lines shown under the page title, then sections of figures."""

    summary: list[str] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------- text lines
def prediction_lines(
    probabilities: torch.Tensor, class_names: Sequence[str], label: int | None = None, k: int = TOP_K
) -> list[str]:
    """``"true: <name>"`` (when ``label`` is given) then the ``k`` most probable classes, best first.

    Args:
        probabilities: ``(C,)`` class probabilities of one image.
    """
    top = probabilities.float().topk(min(k, len(probabilities)))
    lines = [] if label is None else [f"true: {class_names[label]}"]
    for rank, (probability, index) in enumerate(zip(top.values.tolist(), top.indices.tolist()), start=1):
        lines.append(f"{rank}. {class_names[index]}: {probability:.1%}")
    return lines


def readable_prompt(decoding: ContextDecoding) -> str:
    """The decoded prompt with ``[class]`` where the class name goes."""
    return decoding.prompt.replace("{}", "[class]")


def word_similarity_line(decoding: ContextDecoding) -> str:
    """How close each context vector is to its word (cosine), e.g. ``"word cosine: photo 0.41, of 0.12"``."""
    pairs = ", ".join(f"{word} {sim:.2f}" for word, sim in zip(decoding.tokens, decoding.similarities.tolist()))
    return f"word cosine: {pairs}"


def context_prompt_lines(tuner: ClipPromptTuner) -> list[str]:
    """CoOp-style contexts: the nearest readable words of the shared context, or of each class's context."""
    adapter_name = tuner.active_adapters[0]
    readable = tuner.readable_vocabulary(adapter_name)
    context = tuner.context_layer.context[adapter_name]
    if context.ndim == 2:
        decoding = tuner.decode_context(adapter_name, candidate_ids=readable)
        return [f"prompt: {readable_prompt(decoding)}", word_similarity_line(decoding)]
    return class_specific_prompt_lines(tuner, adapter_name, readable)


def class_specific_prompt_lines(tuner: ClipPromptTuner, adapter_name: str, candidate_ids: torch.Tensor) -> list[str]:
    """One ``"<class>: <words> <class>."`` line per class for a class-specific ``(C, M, D)`` context."""
    context = tuner.context_layer.context[adapter_name].float()  # (C, M, D)
    table = tuner.context_layer.weight.float()
    candidate_ids = candidate_ids.to(table.device)
    nearest = candidate_ids[torch.cdist(context, table[candidate_ids][None]).argmin(dim=-1)]  # (C, M)
    tokenizer = tuner.tokenizer(adapter_name)
    class_names = tuner.peft_config[adapter_name].class_names
    return [
        f"{name}: {' '.join(token_words(tokenizer, ids.tolist()))} {name}." for name, ids in zip(class_names, nearest)
    ]


def ipl_prompt_lines(tuner: IPLModel) -> list[str]:
    """IPL's selected readable prompt."""
    decoding = tuner.explain_prompt()
    return [f"prompt: {readable_prompt(decoding)}", word_similarity_line(decoding)]


def intcoop_prompt_lines(tuner: IntCoOpModel) -> list[str]:
    """IntCoOp's context words (before conditioning on the image); the attribute word follows them per image."""
    return [*context_prompt_lines(tuner), "the context is conditioned on each image; its attribute word follows it"]


def dualview_prompt_lines(tuner: DualViewMIModel) -> list[str]:
    """The readable soft view, how close it stays to the hand-crafted view, and the MI bound between them."""
    views = tuner.explain_views()
    return [
        f"prompt: {readable_prompt(views.context)}",
        word_similarity_line(views.context),
        f"mean view similarity (soft vs hand-crafted): {views.view_similarity.mean().item():.3f}",
        f"MI lower bound: {views.mi_lower_bound:.3f} nats",
    ]


def intcoop_image_lines(tuner: IntCoOpModel, pixel_values: torch.Tensor) -> list[list[str]]:
    """Per image: the words nearest to the predicted attribute embedding, with their cosine."""
    explanation = tuner.explain(pixel_values)
    return [
        ["attributes: " + ", ".join(f"{word} {score:.2f}" for word, score in zip(words, scores.tolist()))]
        for words, scores in zip(explanation.attribute_words, explanation.attribute_scores)
    ]


PROMPT_LINES: dict[type, Callable[[ClipPromptTuner], list[str]]] = {
    ClipPromptTuner: context_prompt_lines,
    IPLModel: ipl_prompt_lines,
    IntCoOpModel: intcoop_prompt_lines,
    DualViewMIModel: dualview_prompt_lines,
}
IMAGE_LINES: dict[type, Callable[[ClipPromptTuner, torch.Tensor], list[list[str]]]] = {
    IntCoOpModel: intcoop_image_lines,
}


def lookup(table: dict[type, Callable], tuner: nn.Module) -> Callable | None:
    """The entry of the most specific class in ``type(tuner).__mro__`` that ``table`` has, else ``None``."""
    return next((table[cls] for cls in type(tuner).__mro__ if cls in table), None)


def prompt_lines(tuner: ClipPromptTuner) -> list[str]:
    """The text of ``prompt.png``: the readable prompt of the tuner's method (and its extras)."""
    return lookup(PROMPT_LINES, tuner)(tuner)


def ivpt_score_title(explanation: IVPTExplanation, index: int, class_names: Sequence[str]) -> str:
    """Title of an IVPT score chart: the predicted class and its logit."""
    predicted = int(explanation.predictions[index])
    logit = float(explanation.logits[index, predicted])
    return f"concept contributions to '{class_names[predicted]}' (logit {logit:+.2f})"


# ---------------------------------------------------------------------------------------------------- renderers
def _save(image, batch: ExplanationBatch, filename: str) -> str:
    image.save(batch.output_dir / filename)
    return filename


def _prediction_figures(
    batch: ExplanationBatch, probabilities: torch.Tensor, extra_lines: list[list[str]] | None = None
) -> list[Figure]:
    """Per image ``image_{i}.png``: the image captioned with its top classes (and ``extra_lines[i]``)."""
    figures = []
    for i, image in enumerate(batch.images):
        lines = prediction_lines(probabilities[i], batch.class_names, batch.label(i))
        lines += extra_lines[i] if extra_lines is not None else []
        filename = _save(captioned_figure(image, lines, tile=FIGURE_TILE), batch, f"image_{i}.png")
        figures.append((filename, "\n".join(lines)))
    return figures


def render_ivpt(tuner: IVPTModel, batch: ExplanationBatch) -> Report:
    """Concept overlay, heat maps and contribution chart of every image, from one ``explain`` pass."""
    explanation = tuner.explain(batch.pixel_values)
    concept_names = list(tuner.explanation_metadata()["concepts"])
    probabilities = explanation.logits.float().softmax(dim=-1)  # (B, C)
    final_maps = explanation.concept_maps[-1]  # (B, N + 1, h, w)
    figures: list[Figure] = []
    for i, image in enumerate(batch.images):
        lines = prediction_lines(probabilities[i], batch.class_names, batch.label(i))
        contributions = explanation.contributions[i].float().cpu()  # (N,)
        maps = final_maps[i].float().cpu()
        pictures = [
            concept_overlay(image, maps, concept_names, tile=OVERLAY_TILE),
            concept_map_panel(image, maps, concept_names, contributions.tolist(), tile=HEATMAP_TILE),
        ]
        width = max(picture.width for picture in pictures)
        concepts = stack_panels([*pictures, text_figure(lines, width=width)])
        figures.append((_save(concepts, batch, f"image_{i}_concepts.png"), "\n".join(lines)))
        title = ivpt_score_title(explanation, i, batch.class_names)
        chart = concept_score_chart(contributions, concept_names, title=title)
        figures.append((_save(chart, batch, f"image_{i}_scores.png"), title))
    return Report([f"concepts: {', '.join(concept_names)}"], [("images", figures)])


def render_clip_prompt(tuner: ClipPromptTuner, batch: ExplanationBatch) -> Report:
    """``prompt.png`` with the readable prompt; per image its top classes (and the method's own lines)."""
    lines = prompt_lines(tuner)
    prompt_file = _save(text_figure(lines, width=PROMPT_WIDTH), batch, "prompt.png")
    probabilities = tuner(pixel_values=batch.pixel_values).logits.float().softmax(dim=-1)
    image_lines = lookup(IMAGE_LINES, tuner)
    extra = image_lines(tuner, batch.pixel_values) if image_lines is not None else None
    figures = _prediction_figures(batch, probabilities, extra)
    return Report(lines, [("prompt", [(prompt_file, "\n".join(lines))]), ("images", figures)])


def render_predictions(tuner: nn.Module, batch: ExplanationBatch) -> Report:
    """Any method: per image its top classes."""
    probabilities = tuner(pixel_values=batch.pixel_values).logits.float().softmax(dim=-1)
    return Report([], [("images", _prediction_figures(batch, probabilities))])


RENDERERS: dict[type, Callable[[InterpTuner, ExplanationBatch], Report]] = {
    IVPTModel: render_ivpt,
    ClipPromptTuner: render_clip_prompt,
}


# --------------------------------------------------------------------------------------------------------- html
PAGE_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
ul.summary { list-style: none; padding: 0; }
ul.summary li { margin: 0.2em 0; font-family: ui-monospace, monospace; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(260px, 1fr)); gap: 1.2em; }
figure { margin: 0; border: 1px solid #ddd; padding: 0.5em; background: #fafafa; }
figure img { max-width: 100%; height: auto; image-rendering: pixelated; }
figcaption { font-size: 0.9em; margin-top: 0.4em; }
"""


def _escaped_lines(text: str) -> str:
    return "<br>".join(html.escape(line) for line in text.split("\n"))


def _figure_html(filename: str, caption: str) -> str:
    source = html.escape(quote(filename), quote=True)
    alt = html.escape(caption.split("\n")[0], quote=True)
    return f'<figure><img src="{source}" alt="{alt}"><figcaption>{_escaped_lines(caption)}</figcaption></figure>'


def write_index(
    output_dir: str | Path, title: str, sections: Sequence[Section], summary: Sequence[str] = ()
) -> Path:
    """Write ``index.html`` into ``output_dir``: the title, ``summary`` lines, then per section its heading and a
    grid of its figures (relative ``<img src>``) with captions. All text is HTML-escaped. Returns the page's path.

    Args:
        sections: ``(heading, [(png file name relative to output_dir, caption), ...])``; captions may hold ``\\n``.
        summary: lines under the title (method, readable prompt, concept names ...).
    """
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{PAGE_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if summary:
        parts.append('<ul class="summary">' + "".join(f"<li>{html.escape(line)}</li>" for line in summary) + "</ul>")
    for heading, figures in sections:
        parts.append(f"<section><h2>{html.escape(heading)}</h2><div class=\"grid\">")
        parts.extend(_figure_html(filename, caption) for filename, caption in figures)
        parts.append("</div></section>")
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


def _display_images(images, count: int) -> np.ndarray:
    """``(N, H, W, 3)`` uint8 (numpy or torch), first ``count``."""
    array = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if array.ndim != 4 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise ValueError(f"`images` must be uint8 (N, H, W, 3), got {array.dtype} {tuple(array.shape)}.")
    return array[:count]


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
    """Write PNG explanations of the first ``max_images`` images and an ``index.html`` linking them.

    The model runs in eval mode without autograd; each module's train/eval mode is restored afterwards.

    Args:
        model: a ``PeftModel`` of any peft-interp method, or its tuner (``peft_model.base_model``).
        pixel_values: ``(N, 3, S, S)`` model input.
        images: ``(N, H, W, 3)`` uint8 RGB of the same images, for display.
        output_dir: created if missing.
        labels: ``N`` true classes, shown in the captions.
        class_names: names of the model's classes (default: the adapter config's, else ``class c``).
        title: page title (default ``"<method> explanations"``).

    Returns:
        The path of ``index.html``.
    """
    tuner = resolve_tuner(model)
    if len(images) != len(pixel_values):
        raise ValueError(f"`images` has {len(images)} images but `pixel_values` has {len(pixel_values)}.")
    count = min(max_images, len(pixel_values))
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    batch = ExplanationBatch(
        pixel_values=pixel_values[:count],
        images=_display_images(images, count),
        labels=None if labels is None else [int(label) for label in labels][:count],
        class_names=resolve_class_names(tuner, _num_classes(tuner), class_names),
        output_dir=output_dir,
    )
    renderer = lookup(RENDERERS, tuner) or render_predictions
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            report = renderer(tuner, batch)
    finally:
        for module, training in modes.items():
            module.training = training
    method = method_name(tuner)
    summary = [f"method: {method}", *report.summary]
    return write_index(output_dir, title or f"{method} explanations", report.sections, summary)
