"""Token ids of CLIP prompts whose soft positions are filled by learnt vectors.

A prompt layout is a list of *segments*: an ``int`` ``n`` stands for ``n`` soft positions, a ``str`` is text to
tokenise. CoOp's prompt for class "cat" is ``[4, "cat."]``: ``[SOS] v v v v cat . [EOS]``. Each segment is
tokenised on its own and the pieces are concatenated, so soft positions are known exactly (no placeholder word to
confuse with a class name).

Rows are padded with the EOS id and cut to the longest prompt (the longest EOS position + 1): CLIP's text
transformer is causal and reads the EOS position, so tokens after it never matter, and short prompts cost a
fraction of the 77-token context.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import torch

Segment = Union[int, str]
PLACEHOLDER = "X"  # token written at soft positions (CoOp's "X X X X"); its embedding is always replaced


@dataclass
class PromptBatch:
    """``input_ids`` ``(R, T)``, ``soft_mask`` ``(R, T)`` (True where context vectors go), ``eos_positions`` ``(R,)``."""

    input_ids: torch.Tensor
    soft_mask: torch.Tensor
    eos_positions: torch.Tensor

    def to(self, device) -> PromptBatch:
        return PromptBatch(self.input_ids.to(device), self.soft_mask.to(device), self.eos_positions.to(device))


def tokenize_layout(tokenizer, segments: list[Segment]) -> tuple[list[int], list[bool]]:
    """Ids (with SOS and EOS) and soft flags of one prompt."""
    placeholder = tokenizer.encode(PLACEHOLDER, add_special_tokens=False)
    ids, soft = [tokenizer.bos_token_id], [False]
    for segment in segments:
        if isinstance(segment, int):
            ids += placeholder * segment
            soft += [True] * segment
        elif segment:
            pieces = tokenizer.encode(segment, add_special_tokens=False)
            ids += pieces
            soft += [False] * len(pieces)
    return ids + [tokenizer.eos_token_id], soft + [False]


def build_prompts(tokenizer, layouts: list[list[Segment]], max_length: int = 77) -> PromptBatch:
    """Tokenise one layout per row, pad with EOS and cut to the longest row.

    Raises:
        ValueError: if a prompt is longer than CLIP's ``max_length`` tokens, naming it.
    """
    rows = [tokenize_layout(tokenizer, layout) for layout in layouts]
    for layout, (ids, _) in zip(layouts, rows):
        if len(ids) > max_length:
            raise ValueError(f"The prompt {layout!r} is {len(ids)} tokens long; CLIP reads at most {max_length}.")
    length = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), length), tokenizer.eos_token_id, dtype=torch.long)
    soft_mask = torch.zeros(len(rows), length, dtype=torch.bool)
    for row, (ids, soft) in enumerate(rows):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        soft_mask[row, : len(soft)] = torch.tensor(soft)
    eos_positions = torch.tensor([len(ids) - 1 for ids, _ in rows])
    return PromptBatch(input_ids, soft_mask, eos_positions)


def prompt_class_name(class_name: str) -> str:
    """The words a class name contributes to a prompt: ``_`` read as a space, as the reference CoOp code does
    (``name.replace("_", " ")``), so ``"lawn_mower"`` is prompted as ``"lawn mower"``."""
    return " ".join(class_name.replace("_", " ").split())


def fill_template(template: str, class_name: str) -> str:
    """``template`` with its ``{}`` replaced by the prompt form of ``class_name`` (:func:`prompt_class_name`)."""
    return template.replace("{}", prompt_class_name(class_name))
