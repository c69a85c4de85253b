"""Attribute labels of training images for IntCoOp's ``L_attr``: one adjective per image, computed once.

A *source* is any callable ``source(batch) -> list[str | None]``: given a batch of dataset rows as a dict of columns
(``{"image": [...], "class_name": [...], ...}``) it returns one attribute word per row, ``None`` where it has no
valid one. :func:`add_attribute_column` runs a source over a ``datasets.Dataset`` once, with a progress bar
(``Dataset.map``), and stores the words as a column (``""`` = no label); the column is the cache, and
:func:`save_attribute_file` writes it as a sidecar label file. Four sources:

* :class:`CaptionerAttributes` - a visual question-answering / captioning model (the paper: BLIP-2) asked
  ``"Question: What is one adjective that describes the {name} in this image? Answer:"``, the answer cleaned by
  :func:`clean_adjective`. :meth:`CaptionerAttributes.from_pretrained` builds one from a transformers checkpoint;
  any ``answer(images, questions) -> answers`` callable works.
* :class:`LabelFileAttributes` - a JSON (``{image id: word}``) or CSV (``id,attribute``) file.
* :class:`ConceptWorldAttributes` - ground truth of :mod:`peft_interp.data.conceptworld` (its ``attributes`` column).
* :class:`ZeroShotAttributes` - zero-shot CLIP over an adjective vocabulary (the fallback with no captioner).
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Optional, Protocol

import torch
import torch.nn.functional as F

from ...data.preprocessing import ImageTransform, image_statistics
from ..clip_prompt.prompts import prompt_class_name

DEFAULT_QUESTION = "Question: What is one adjective that describes the {} in this image? Answer:"
ARTICLES = frozenset({"a", "an", "the"})

# Fallback vocabulary of ZeroShotAttributes: colours, textures, states, materials, sizes (the paper's kind of word).
DEFAULT_ADJECTIVES = (
    "red green blue yellow orange purple pink brown black white grey golden silver striped spotted dotted plain "
    "furry fluffy smooth rough shiny wet dry wooden metal plastic glass small large tiny tall long short round "
    "bright dark old young colorful sleeping flying"
).split()


class AttributeSource(Protocol):
    """``source(batch) -> words``; may set ``fingerprint`` (str) naming its labels (see :func:`add_attribute_column`)."""

    def __call__(self, batch: dict[str, list]) -> list[Optional[str]]:
        """One attribute word (or ``None``) per row of a batch of dataset columns."""


def clean_adjective(
    answer: str, class_name: str = "", is_adjective: Callable[[str], bool] | None = None
) -> Optional[str]:
    """Turn a free-text answer into one lower-case word, or ``None`` if no valid adjective remains.

    Lower-case, drop punctuation and articles, keep the first word; reject an empty answer, a word of the class
    name, and (if ``is_adjective`` is given, e.g. a spaCy POS check) a word it rejects.
    """
    words = [w for w in re.sub(r"[^a-z\s-]", " ", answer.lower()).replace("-", " ").split() if w not in ARTICLES]
    if not words:
        return None
    word = words[0]
    if word in class_name.lower().replace("-", " ").split():
        return None
    if is_adjective is not None and not is_adjective(word):
        return None
    return word


class CaptionerAttributes:
    """Ask a VQA / captioning model for one adjective per image (the class name goes into the question).

    Args:
        answer: ``answer(images, questions) -> answers`` (lists of equal length), e.g. a BLIP-2 wrapper from
            :meth:`from_pretrained`.
        question: with one ``{}`` for the class name; default :data:`DEFAULT_QUESTION`.
        image_column, class_name_column: dataset columns read.
        is_adjective: optional word filter (see :func:`clean_adjective`).
    """

    def __init__(
        self,
        answer: Callable[[list, list[str]], list[str]],
        question: str = DEFAULT_QUESTION,
        image_column: str = "image",
        class_name_column: str = "class_name",
        is_adjective: Callable[[str], bool] | None = None,
    ) -> None:
        if question.count("{}") != 1:
            raise ValueError(f"`question` must contain exactly one '{{}}' for the class name, got {question!r}.")
        self.answer, self.question = answer, question
        self.image_column, self.class_name_column, self.is_adjective = image_column, class_name_column, is_adjective
        self.fingerprint: Optional[str] = None  # set by from_pretrained: the checkpoint and the question

    def __call__(self, batch: dict[str, list]) -> list[Optional[str]]:
        names = batch[self.class_name_column]
        answers = self.answer(batch[self.image_column], [self.question.replace("{}", name) for name in names])
        return [clean_adjective(a, name, self.is_adjective) for a, name in zip(answers, names)]

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str = "Salesforce/blip2-flan-t5-xl",
        max_new_tokens: int = 5,
        device: str | None = None,
        **kwargs,
    ) -> CaptionerAttributes:
        """A BLIP-2 checkpoint (the paper's captioner) answering greedily in at most ``max_new_tokens`` new tokens
        (default ``Salesforce/blip2-flan-t5-xl``, 5 tokens)."""
        from transformers import AutoProcessor, Blip2ForConditionalGeneration

        processor = AutoProcessor.from_pretrained(name_or_path)
        model = Blip2ForConditionalGeneration.from_pretrained(name_or_path).eval()
        if device is not None:
            model = model.to(device)
        source = cls.from_model(model, processor, max_new_tokens=max_new_tokens, **kwargs)
        source.fingerprint = f"captioner|{name_or_path}|{source.question}|{max_new_tokens}"
        return source

    @classmethod
    def from_model(cls, model, processor, max_new_tokens: int = 5, **kwargs) -> CaptionerAttributes:
        """Wrap a loaded BLIP-2 model (``Blip2ForConditionalGeneration``) and its processor; greedy answers."""
        if model.config.use_decoder_only_language_model:  # OPT variants: prompts must end where generation starts
            processor.tokenizer.padding_side = "left"

        @torch.no_grad()
        def answer(images: list, questions: list[str]) -> list[str]:
            inputs = processor(images=images, text=questions, return_tensors="pt", padding=True).to(model.device)
            ids = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
            if model.config.use_decoder_only_language_model:  # OPT variants echo the question: keep the answer
                ids = ids[:, inputs["input_ids"].shape[1] :]
            return processor.batch_decode(ids, skip_special_tokens=True)

        return cls(answer, **kwargs)


class LabelFileAttributes:
    """Attributes from a file: JSON ``{image id: word}`` or CSV with ``id`` and ``attribute`` columns.

    Args:
        path: ``.json`` or ``.csv``.
        id_column: the dataset column holding each row's image id (compared as strings).
    """

    def __init__(self, path: str | Path, id_column: str = "id") -> None:
        path = Path(path)
        if path.suffix == ".json":
            labels = json.loads(path.read_text())
        elif path.suffix == ".csv":
            with path.open(newline="") as handle:
                labels = {row["id"]: row["attribute"] for row in csv.DictReader(handle)}
        else:
            raise ValueError(f"Attribute label files must be .json or .csv, got {path.name!r}.")
        self.labels = {str(key): (value or None) for key, value in labels.items()}
        self.id_column = id_column
        self.fingerprint = f"file|{path.resolve()}|{path.stat().st_mtime_ns}|{id_column}"

    def __call__(self, batch: dict[str, list]) -> list[Optional[str]]:
        return [self.labels.get(str(image_id)) for image_id in batch[self.id_column]]


class ConceptWorldAttributes:
    """Ground-truth attribute of ConceptWorld images: ``attributes[part][kind]``.

    Default: the wing's colour, which varies from image to image and is not in the class name (class names fix the
    head and body colours, the wing pattern and the tail shape).
    """

    def __init__(self, part: str = "wing", kind: str = "color") -> None:
        from ...data.conceptworld import ATTRIBUTE_KINDS, PART_NAMES

        if part not in PART_NAMES:
            raise ValueError(f"`part` must be one of {list(PART_NAMES)}, got {part!r}.")
        if kind not in ATTRIBUTE_KINDS:
            raise ValueError(f"`kind` must be one of {list(ATTRIBUTE_KINDS)}, got {kind!r}.")
        self.part, self.kind = part, kind
        self.fingerprint = f"conceptworld|{part}|{kind}"

    def __call__(self, batch: dict[str, list]) -> list[Optional[str]]:
        return [attributes[self.part][self.kind] for attributes in batch["attributes"]]


class ZeroShotAttributes:
    """Zero-shot CLIP: the adjective ``a`` maximising ``cos(image, "a photo of a {a} {class name}.")``.

    Args:
        clip: a ``CLIPModel`` (frozen; a PEFT-wrapped one works with its adapter disabled by the caller).
        tokenizer: its CLIP tokenizer.
        vocabulary: candidate adjectives; default :data:`DEFAULT_ADJECTIVES`.
        template: with ``{}`` for ``"{adjective} {class name}"``.
        transform: ``images -> (B, 3, S, S)`` pixel values; default: the command line's
            :class:`~peft_interp.data.preprocessing.ImageTransform` at the model's image size, with its image
            processor's mean and std.
        image_column, class_name_column: dataset columns read.
    """

    def __init__(
        self,
        clip,
        tokenizer,
        vocabulary: Sequence[str] = DEFAULT_ADJECTIVES,
        template: str = "a photo of a {}.",
        transform: Callable[[list], torch.Tensor] | None = None,
        image_column: str = "image",
        class_name_column: str = "class_name",
    ) -> None:
        if not vocabulary:
            raise ValueError("`vocabulary` must hold at least one adjective.")
        self.clip, self.tokenizer, self.vocabulary, self.template = clip, tokenizer, list(vocabulary), template
        if transform is None:
            transform = ImageTransform(clip.config.vision_config.image_size, *image_statistics(clip)).batch
        self.transform = transform
        self.image_column, self.class_name_column = image_column, class_name_column
        self._text: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def text_features(self, class_name: str) -> torch.Tensor:
        """``(A, P)`` normalised features of the adjective prompts of one class (once per class)."""
        if class_name not in self._text:
            name = prompt_class_name(class_name)
            prompts = [self.template.replace("{}", f"{adjective} {name}") for adjective in self.vocabulary]
            ids = self.tokenizer(prompts, padding=True, return_tensors="pt").input_ids.to(self.clip.device)
            self._text[class_name] = F.normalize(self.clip.get_text_features(input_ids=ids).pooler_output, dim=-1)
        return self._text[class_name]

    @torch.no_grad()
    def __call__(self, batch: dict[str, list]) -> list[Optional[str]]:
        pixels = self.transform(batch[self.image_column]).to(self.clip.device)
        images = F.normalize(self.clip.get_image_features(pixel_values=pixels).pooler_output, dim=-1)  # (B, P)
        names = batch[self.class_name_column]
        best = [int((self.text_features(name) @ image).argmax()) for image, name in zip(images, names)]
        return [self.vocabulary[i] for i in best]


def add_attribute_column(
    dataset,
    source: AttributeSource,
    column: str = "attribute",
    batch_size: int = 16,
    fingerprint: str | None = None,
    **map_kwargs: Any,
):
    """Label every row once with ``source`` (``Dataset.map``, batched, with a progress bar); ``""`` = no label.

    Returns the dataset with the new ``column``. On a dataset loaded from disk, ``datasets`` caches the result under
    a fingerprint, so a second call with the same source is free; save labels for other runs with
    :func:`save_attribute_file`. The fingerprint combines the dataset's with ``fingerprint`` (or the source's own
    ``fingerprint`` attribute), so that ``datasets`` need not hash the source itself (a captioning model of several
    GB); sources without one are hashed by ``datasets``.
    """
    if column in dataset.column_names:
        raise ValueError(f"The dataset already has a column {column!r}: remove it or pick another `column`.")

    def label(batch: dict[str, list]) -> dict[str, list[str]]:
        words = source(batch)
        if len(words) != len(next(iter(batch.values()))):
            raise ValueError(f"The attribute source returned {len(words)} words for a batch of another size.")
        return {column: [word or "" for word in words]}

    map_kwargs.setdefault("desc", f"Labelling attributes ({type(source).__name__})")
    fingerprint = fingerprint or getattr(source, "fingerprint", None)
    if fingerprint is not None and "new_fingerprint" not in map_kwargs:
        from datasets.fingerprint import Hasher

        map_kwargs["new_fingerprint"] = Hasher.hash((dataset._fingerprint, column, batch_size, fingerprint))
    return dataset.map(label, batched=True, batch_size=batch_size, **map_kwargs)


def save_attribute_file(dataset, path: str | Path, id_column: str = "id", column: str = "attribute") -> None:
    """Write ``{image id: attribute}`` of a labelled dataset as JSON or CSV (read back by
    :class:`LabelFileAttributes`)."""
    path = Path(path)
    pairs: Iterable = zip(map(str, dataset[id_column]), dataset[column])
    if path.suffix == ".json":
        path.write_text(json.dumps(dict(pairs), indent=0))
    elif path.suffix == ".csv":
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["id", "attribute"])
            writer.writerows(pairs)
    else:
        raise ValueError(f"Attribute label files must be .json or .csv, got {path.name!r}.")


def attributes_of(batch: dict[str, list], column: str = "attribute") -> list[Optional[str]]:
    """The ``attributes`` argument of ``IntCoOpModel.forward`` from a batch of a labelled dataset."""
    return [word or None for word in batch[column]]


ATTRIBUTE_SOURCES = "column:NAME, file:PATH, zero-shot[:ADJECTIVES_FILE], blip2[:CHECKPOINT] or conceptworld"


def adjectives_from_file(path: str | Path) -> list[str]:
    """One adjective per line (blank lines and ``#`` comments skipped), lower-cased; refuses an empty list."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"adjective list {str(path)!r} does not exist")
    words = [line.strip().lower() for line in path.read_text().splitlines()]
    words = [word for word in words if word and not word.startswith("#")]
    if not words:
        raise ValueError(f"adjective list {str(path)!r} holds no words")
    return words


def attribute_source_from_spec(
    spec: str, clip=None, tokenizer=None, transform: Callable[[list], torch.Tensor] | None = None, id_column: str = "id"
) -> tuple[Optional[AttributeSource], Optional[str], str]:
    """Parse an attribute-source spec (the ``--attribute-source`` flag of ``peft-interp train``).

    Returns ``(source, column, description)``: a source to label the images with (``None`` for ``column:NAME``,
    whose words are read as they are from ``column``), and a sentence saying which labeller it is.

    * ``column:NAME`` — the words already in dataset column ``NAME``;
    * ``file:PATH`` — a JSON / CSV label file keyed by ``id_column`` (:class:`LabelFileAttributes`);
    * ``zero-shot`` or ``zero-shot:ADJECTIVES_FILE`` — zero-shot ``clip`` over :data:`DEFAULT_ADJECTIVES` or the
      file's adjectives (:class:`ZeroShotAttributes`);
    * ``blip2`` or ``blip2:CHECKPOINT`` — BLIP-2 VQA (default ``Salesforce/blip2-flan-t5-xl``), as in the paper;
      refused with a message when the checkpoint cannot be loaded (offline, not cached);
    * ``conceptworld`` — ConceptWorld's ground truth (the wing colour, :class:`ConceptWorldAttributes`).

    Raises:
        ValueError: naming the spec and what was expected.
    """
    kind, _, value = spec.partition(":")
    if kind == "column":
        if not value:
            raise ValueError("attribute source 'column:NAME' needs the column name after 'column:'")
        return None, value, f"the words of dataset column {value!r}"
    if kind == "file":
        if not value or not Path(value).is_file():
            raise ValueError(f"attribute source {spec!r}: no label file {value!r} (JSON {{id: word}} or CSV id,attribute)")
        return LabelFileAttributes(value, id_column=id_column), None, f"label file {value} (ids from column {id_column!r})"
    if kind == "zero-shot":
        vocabulary = adjectives_from_file(value) if value else list(DEFAULT_ADJECTIVES)
        source = ZeroShotAttributes(clip, tokenizer, vocabulary, transform=transform)
        import hashlib

        weights = hashlib.sha1(clip.visual_projection.weight.detach().cpu().numpy().tobytes()).hexdigest()
        source.fingerprint = f"zero-shot|{weights}|{'/'.join(vocabulary)}"  # the model's weights and the words
        where = f"the adjectives of {value}" if value else "the built-in list"
        return source, None, f"zero-shot CLIP over {len(vocabulary)} adjectives ({where})"
    if kind == "blip2":
        checkpoint = value or "Salesforce/blip2-flan-t5-xl"
        try:
            source = CaptionerAttributes.from_pretrained(checkpoint)
        except (OSError, ValueError, ImportError) as error:
            raise ValueError(
                f"attribute source {spec!r}: the BLIP-2 checkpoint {checkpoint!r} cannot be loaded here ({error}). "
                "It needs the Hub or a local copy; pick another labeller: zero-shot, file:PATH or column:NAME."
            ) from None
        return source, None, f"BLIP-2 ({checkpoint}) asked for one adjective per image"
    if kind == "conceptworld" and not value:
        return ConceptWorldAttributes(), None, "ConceptWorld's ground truth (wing colour)"
    raise ValueError(f"unknown attribute source {spec!r}: expected {ATTRIBUTE_SOURCES}")


class WithClassNames:
    """Adds a ``class_name`` column (from the label ids) to each batch before calling a source that asks for it."""

    def __init__(self, source: AttributeSource, class_names: list[str], label_column: str = "label") -> None:
        self.source, self.class_names, self.label_column = source, list(class_names), label_column
        fingerprint = getattr(source, "fingerprint", None)
        self.fingerprint = None if fingerprint is None else f"{fingerprint}|{'/'.join(self.class_names)}"

    def __call__(self, batch: dict[str, list]) -> list[Optional[str]]:
        names = [self.class_names[int(label)] for label in batch[self.label_column]]
        return self.source({**batch, "class_name": names})
