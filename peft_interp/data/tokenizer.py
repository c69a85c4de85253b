"""OpenAI CLIP's tokenizer, offline.

`peft_interp/data/clip_tokenizer/` ships the `vocab.json` / `merges.txt` of OpenAI CLIP's BPE tokenizer (49,408
tokens, context length 77), built from the `bpe_simple_vocab_16e6.txt.gz` file that `open_clip_torch` redistributes
(OpenAI CLIP vocabulary, MIT License, Copyright (c) 2021 OpenAI; see the repository's
`scripts/build_clip_tokenizer.py` and the folder's `LICENSE`).
`transformers.CLIPTokenizer.from_pretrained(CLIP_TOKENIZER_DIR)` loads it without the Hub.

Token ids and text cleaning
---------------------------
OpenAI's reference tokenizer (`clip.simple_tokenizer`, copied as `open_clip.tokenizer.SimpleTokenizer`) cleans text
before BPE: `ftfy.fix_text`, `html.unescape` twice, whitespace collapsed, lower-cased. The plain
`transformers.CLIPTokenizer` (transformers >= 5) only applies NFC + whitespace collapsing + lower-casing in its Rust
normalizer, so its ids differ from OpenAI's for text that ftfy or the html unescaping would change, for example
`"&amp;"`, curly quotes `“ ”`, full-width letters `ＡＢＣ`, ligatures `ﬁ` or mojibake `Ã©`.

`load_clip_tokenizer()` therefore returns an [`OpenAICLIPTokenizer`]: a `CLIPTokenizer` that runs OpenAI's exact
cleaning in Python ([`clean_clip_text`]) and then the same regex pre-tokenization and BPE. Its ids equal
`open_clip.tokenize` for ordinary text (checked in `tests/test_clip_tokenizer.py`). Remaining differences:

- Padding: `open_clip.tokenize` pads with id 0; transformers pads with `<|endoftext|>` (49407) and returns an
  `attention_mask`. The ids before the padding are the same.
- Special-token strings inside the text: the literal `<|startoftext|>` / `<|endoftext|>` become the special ids
  here, whereas open_clip spells its specials `<start_of_text>` / `<end_of_text>` and splits `<|endoftext|>` into
  ordinary tokens.
- ftfy is optional: without it [`clean_clip_text`] skips `ftfy.fix_text` (with a warning), which only matters for
  text that ftfy would repair.
"""

from __future__ import annotations

import html
import json
import warnings
from functools import lru_cache
from pathlib import Path

from transformers import CLIPTokenizer


CLIP_TOKENIZER_DIR = Path(__file__).resolve().parent / "clip_tokenizer"
CLIP_CONTEXT_LENGTH = 77


@lru_cache(maxsize=1)
def _ftfy_fix_text():
    """`ftfy.fix_text`, or `None` (with a one-time warning) when ftfy is not installed."""
    try:
        import ftfy
    except ImportError:
        warnings.warn(
            "ftfy is not installed: CLIP text cleaning skips `ftfy.fix_text`, so token ids can differ from OpenAI's "
            "tokenizer for text with mojibake, curly quotes, full-width characters or ligatures (`pip install ftfy`).",
            stacklevel=3,
        )
        return None
    return ftfy.fix_text


def clean_clip_text(text: str) -> str:
    """Cleans `text` exactly as OpenAI CLIP's reference tokenizer does before BPE.

    `ftfy.fix_text` (when ftfy is installed), `html.unescape` twice (so `&amp;amp;` -> `&`), whitespace runs collapsed
    to one space, ends stripped, lower-cased.
    """
    fix_text = _ftfy_fix_text()
    if fix_text is not None:
        text = fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return " ".join(text.split()).lower()


def _clean_text_input(text):
    """Applies [`clean_clip_text`] to a string, or to each string of a (nested) list or tuple of strings."""
    if text is None:
        return None
    if isinstance(text, str):
        return clean_clip_text(text)
    return type(text)(_clean_text_input(item) for item in text)


class OpenAICLIPTokenizer(CLIPTokenizer):
    """A `CLIPTokenizer` whose token ids match OpenAI's reference CLIP tokenizer (and `open_clip.tokenize`).

    Every input text goes through [`clean_clip_text`] (ftfy, html unescaping, whitespace, lower case) in Python.
    The backend's own normalizer (NFC, whitespace, lower case) is switched off while encoding: the cleaning already
    does its work, and NFC after the html unescaping would recompose characters that OpenAI's tokenizer leaves
    decomposed. Everything else (vocabulary, pre-tokenization regex, BPE, special tokens, truncation, padding) is
    `CLIPTokenizer`'s.

    `save_pretrained` writes a plain `CLIPTokenizer` folder (backend normalizer restored, `tokenizer_class` set to
    `"CLIPTokenizer"`), since the Python cleaning cannot be serialized; reload it with
    `OpenAICLIPTokenizer.from_pretrained` to keep the cleaning.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._clip_normalizer = self.backend_tokenizer.normalizer
        self.backend_tokenizer.normalizer = None

    def _encode_plus(self, text, text_pair=None, *args, **kwargs):
        return super()._encode_plus(_clean_text_input(text), _clean_text_input(text_pair), *args, **kwargs)

    def save_pretrained(self, save_directory, *args, **kwargs):
        self.backend_tokenizer.normalizer = self._clip_normalizer
        try:
            saved_files = super().save_pretrained(save_directory, *args, **kwargs)
        finally:
            self.backend_tokenizer.normalizer = None
        for saved_file in map(Path, saved_files):
            if saved_file.name.endswith("tokenizer_config.json"):
                tokenizer_config = json.loads(saved_file.read_text("utf-8"))
                tokenizer_config["tokenizer_class"] = CLIPTokenizer.__name__
                saved_file.write_text(json.dumps(tokenizer_config, indent=2, sort_keys=True) + "\n", "utf-8")
        return saved_files


def load_clip_tokenizer(openai_text_cleaning: bool = True) -> CLIPTokenizer:
    """Loads OpenAI CLIP's tokenizer from the files shipped in `peft_interp/data/clip_tokenizer/` (no Hub access).

    Args:
        openai_text_cleaning (`bool`, defaults to `True`):
            Return an [`OpenAICLIPTokenizer`], whose ids match OpenAI's / open_clip's tokenizer exactly (see the
            module docstring). With `False`, return the plain `transformers.CLIPTokenizer`, as
            `CLIPTokenizer.from_pretrained("openai/clip-vit-base-patch32")` would behave.

    Returns:
        `transformers.CLIPTokenizer`: 49,408-token vocabulary, `model_max_length=77`, `<|startoftext|>` = 49406,
        `<|endoftext|>` = 49407 (also the padding token).
    """
    tokenizer_class = OpenAICLIPTokenizer if openai_text_cleaning else CLIPTokenizer
    return tokenizer_class.from_pretrained(CLIP_TOKENIZER_DIR)
