"""The one explanation contract of peft-interp.

Every tuner's ``explain(pixel_values)`` returns a subclass of :class:`Explanation`. Reports, model cards and
``explanation.json`` read only the fields defined here, so what a page shows is chosen by what an explanation
holds, never by the class of the tuner:

* ``logits`` / ``predictions``: always (the decision being explained);
* ``maps`` + ``map_names`` (+ ``background``): where the model looked, one named map per concept (IVPT's concepts,
  VPT-deep's prompt-token similarity maps);
* ``contributions``: how much each named map added to the predicted class's logit (IVPT);
* ``prompt``: the learnt text prompt read as words (CLIP prompt methods), see :class:`PromptExplanation`; a prompt
  that mixes real words and learnt vectors (IPL's hybrid prompt) also comes position by position
  (:class:`PromptPosition`), in the order the text encoder reads it;
* ``image_notes``: per image, extra lines of text (IntCoOp's predicted attribute words).

Methods add their own fields in their subclass (e.g. IVPT's per-level maps and grouping matrices).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
from transformers.utils import ModelOutput

# One-line meaning of the number printed next to each decoded word.
WORD_SIMILARITY_MEANING = (
    "similarity = cosine between the learnt vector and the word's embedding: 1.00 means the vector is exactly the "
    "word; below about 0.5 the word is only the nearest of many unrelated ones and says little."
)
# The same for a prompt read position by position (selected words and learnt vectors).
POSITION_SIMILARITY_MEANING = (
    "similarity = cosine between the learnt vector and the nearest word's token embedding (1.00 = exactly that "
    "word; below about 0.5 the word says little about the vector); a selected word is that word's frozen token "
    "embedding, so always 1.00."
)
WEAK_SIMILARITY = 0.5  # below it, a learnt vector's nearest word is one of many unrelated ones
POSITION_KINDS = ("word", "learnt", "slot")


@dataclass
class ContextDecoding:
    """A learnt context read as words: per context position the chosen token and how close the vector is to it.

    Args:
        tokens: ``M`` words.
        token_ids: ``(M,)`` their token ids.
        distances: ``(M,)`` Euclidean distance between each context vector and its token's embedding.
        similarities: ``(M,)`` their cosine similarity.
        prompt: the prompt as text, ``{}`` where the class name goes.
        how: how the words were chosen, one short phrase (e.g. "nearest token of the whole vocabulary").
    """

    tokens: list[str]
    token_ids: torch.Tensor
    distances: torch.Tensor
    similarities: torch.Tensor
    prompt: str
    how: str = ""

    def word_similarity_line(self) -> str:
        """``"photo 0.41, of 0.12"``: each word with its similarity, in context order."""
        return ", ".join(f"{word} {sim:.2f}" for word, sim in zip(self.tokens, self.similarities.tolist()))


@dataclass
class PromptPosition:
    """One position of a prompt, as the text encoder reads it.

    Args:
        text: what the position holds, as text: a real word (``kind="word"``), the nearest readable word of a
            learnt vector (``"learnt"``), or the mark of a slot filled elsewhere (``"slot"``: ``"[class]."``,
            ``"[attribute]"``).
        kind: ``"word"``, ``"learnt"`` or ``"slot"``.
        similarity: cosine between the position's vector and ``text``'s token embedding: 1.0 for a word (it *is*
            the embedding), the decoding's similarity for a learnt vector, ``None`` for a slot.
        note: what the position is, a few words (``"selected word, frozen"``, ``"learnt vector"``, ``"class name"``).
    """

    text: str
    kind: str
    similarity: Optional[float] = None
    note: str = ""

    def __post_init__(self) -> None:
        if self.kind not in POSITION_KINDS:
            raise ValueError(f"`kind` must be one of {list(POSITION_KINDS)}, got {self.kind!r}.")

    def as_text(self) -> str:
        """The position in a one-line prompt: a word as itself, a learnt vector as ``[its nearest word]``."""
        return f"[{self.text}]" if self.kind == "learnt" else self.text


@dataclass
class PromptExplanation:
    """The learnt prompt of a CLIP prompt method, read as words.

    Args:
        readable: the method's readable prompt (IPL: its selected words; CoOp-style: the nearest words of the whole
            CLIP vocabulary that are words, short ones like "a" and "of" included).
        nearest: nearest-token decoding over the whole vocabulary (any BPE piece), shown beside ``readable`` when
            the method has its own readable prompt or when the two differ.
        class_prompts: one readable prompt per class, for class-specific contexts (then ``readable`` is ``None``).
        notes: method-specific lines (e.g. DualViewMI's view similarity and MI bound).
        positions: the whole prompt position by position, in the model's order, when it mixes real words and learnt
            vectors (IPL's hybrid prompt; ``readable`` then decodes the learnt vectors only, in the same order).
            Shown instead of the ``readable`` / ``nearest`` lines, with ``nearest`` put in place of the learnt vectors.
    """

    readable: Optional[ContextDecoding] = None
    nearest: Optional[ContextDecoding] = None
    class_prompts: Optional[list[str]] = None
    notes: list[str] = field(default_factory=list)
    positions: Optional[list[PromptPosition]] = None

    def lines(self, with_positions: bool = True) -> list[str]:
        """The prompt as text lines for pages and cards (``[class]`` marks where the class name goes).

        Args:
            with_positions: include the text lines of ``positions`` (a page that draws them leaves them out).
        """
        if self.positions is not None:
            return self._position_lines(with_positions)
        lines = []
        same = self.readable is not None and self.nearest is not None and self.readable.tokens == self.nearest.tokens
        for label, decoding in (("readable prompt", self.readable), ("nearest tokens", self.nearest)):
            if decoding is not None and not (same and decoding is self.nearest):
                how = f" ({decoding.how})" if decoding.how else ""
                lines.append(f"{label}{how}: {decoding.prompt.replace('{}', '[class]')}")
                lines.append(f"  similarity per word: {decoding.word_similarity_line()}")
        if same:
            lines.append("  (the nearest tokens of the whole vocabulary are the same words)")
        lines += list(self.class_prompts or [])
        lines += self.notes
        if self.readable is not None or self.nearest is not None:
            lines.append(WORD_SIMILARITY_MEANING)
        return lines

    def nearest_positions(self) -> Optional[list[PromptPosition]]:
        """``positions`` with each learnt vector read as ``nearest``'s token instead (``None`` without ``nearest``)."""
        if self.positions is None or self.nearest is None:
            return None
        tokens = iter(zip(self.nearest.tokens, self.nearest.similarities.tolist()))
        read = []
        for position in self.positions:
            if position.kind == "learnt":
                token, similarity = next(tokens)
                position = PromptPosition(token, "learnt", similarity, position.note)
            read.append(position)
        return read

    def _position_lines(self, with_positions: bool) -> list[str]:
        lines = []
        if with_positions:
            lines.append(f"prompt as the model reads it ([w]: a learnt vector, shown as its nearest readable word w): "
                         f"{position_prompt(self.positions)}")  # fmt: skip
            lines.append(f"  similarity per position: {position_similarity_line(self.positions)}")
        nearest = self.nearest_positions()
        if nearest is not None:
            lines.append(f"nearest tokens of the whole vocabulary in place of the learnt vectors: "
                         f"{position_prompt(nearest)}")  # fmt: skip
        lines += self.notes
        lines.append(POSITION_SIMILARITY_MEANING)
        return lines


def position_prompt(positions: list[PromptPosition]) -> str:
    """``"[photo] [dark] striped [big] [class]."``: the prompt on one line, learnt vectors in brackets."""
    return " ".join(position.as_text() for position in positions)


def position_similarity_line(positions: list[PromptPosition]) -> str:
    """``"photo 0.41, striped 1.00 (selected word, frozen)"``: every word or learnt vector with its similarity."""
    parts = []
    for position in positions:
        if position.similarity is not None:
            note = f" ({position.note})" if position.kind == "word" and position.note else ""
            parts.append(f"{position.text} {position.similarity:.2f}{note}")
    return ", ".join(parts)


@dataclass
class Explanation(ModelOutput):
    """What a model computed for a batch of images, and why it decided as it did.

    Args:
        logits: ``(B, C)`` class scores.
        predictions: ``(B,)`` predicted classes.
        maps: ``(B, N, h, w)`` non-negative maps of the ``N`` named concepts (or prompt tokens) over the patch grid.
        map_names: the ``N`` names of ``maps``.
        background: ``(B, h, w)`` the background map, when the method has one.
        contributions: ``(B, N)`` each map's concept's additive share of the predicted class's logit.
        class_contributions: ``(B, C, N)`` each concept's additive share of every class's logit (``contributions``
            is its slice at the predicted class); lets a faithfulness test follow one class while images change.
        prompt: the learnt text prompt read as words (CLIP prompt methods).
        image_notes: per image, extra text lines (e.g. predicted attribute words).
    """

    logits: Optional[torch.Tensor] = None
    predictions: Optional[torch.Tensor] = None
    maps: Optional[torch.Tensor] = None
    map_names: Optional[list[str]] = None
    background: Optional[torch.Tensor] = None
    contributions: Optional[torch.Tensor] = None
    class_contributions: Optional[torch.Tensor] = None
    prompt: Optional[PromptExplanation] = None
    image_notes: Optional[list[list[str]]] = None


def predictions_of(logits: torch.Tensor) -> torch.Tensor:
    """``(B, C) -> (B,)`` argmax."""
    return logits.argmax(dim=-1)
