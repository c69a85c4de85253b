"""Human-readable CLIP tokens: the candidates of readable prompts and the yardstick of prompt readability.

A token is *readable* when it is a whole word of CLIP's BPE vocabulary (it ends with ``</w>``), made only of
letters, of a sensible length, and not a stop word. No dictionary ships with the package; this filter is the
stand-in, and its knobs are config fields wherever it is used.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

STOP_WORDS = frozenset(
    "a about above after again against all am an and any are as at be because been before being below between both "
    "but by can did do does doing down during each few for from further had has have having he her here hers him "
    "his how i if in into is it its itself just me more most my no nor not now of off on once only or other our "
    "ours out over own same she should so some such than that the their theirs them then there these they this "
    "those through to too under until up very was we were what when where which while who whom why will with you "
    "your yours".split()
)


def readable_token_ids(
    tokenizer, min_length: int = 3, max_length: int = 15, exclude_words: Iterable[str] = ()
) -> torch.Tensor:
    """Ids ``(V',)`` of readable whole-word tokens, sorted, excluding ``exclude_words`` (e.g. class-name words)."""
    excluded = STOP_WORDS | {word.lower() for word in exclude_words}
    ids = []
    for token, token_id in tokenizer.get_vocab().items():
        if not token.endswith("</w>"):
            continue
        word = token[: -len("</w>")]
        if word.isascii() and word.isalpha() and min_length <= len(word) <= max_length and word not in excluded:
            ids.append(token_id)
    return torch.tensor(sorted(ids), dtype=torch.long)


def word_token_ids(tokenizer) -> torch.Tensor:
    """Ids ``(V',)`` of every whole-word, alphabetic ASCII token (any length, stop words kept), sorted.

    The vocabulary for *reading* a context honestly: an unchanged ``"a photo of a"`` decodes to itself, where the
    stricter :func:`readable_token_ids` (a vocabulary for *choosing* words) would put other words in its place.
    """
    ids = [
        token_id
        for token, token_id in tokenizer.get_vocab().items()
        if token.endswith("</w>") and token[: -len("</w>")].isascii() and token[: -len("</w>")].isalpha()
    ]
    return torch.tensor(sorted(ids), dtype=torch.long)


def token_words(tokenizer, token_ids: Iterable[int]) -> list[str]:
    """Tokens as text: whole-word markers dropped (``"photo</w>"`` -> ``"photo"``)."""
    return [token.removesuffix("</w>") for token in tokenizer.convert_ids_to_tokens(list(token_ids))]


def class_name_words(class_names: Iterable[str]) -> set[str]:
    """Lower-case words of the class names (split on spaces, underscores and hyphens), to keep them out of readable
    prompts."""
    return {word for name in class_names for word in name.lower().replace("-", " ").replace("_", " ").split()}
