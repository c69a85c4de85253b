"""Tests of the shipped OpenAI CLIP tokenizer: files, loading offline, and token-id parity with open_clip.

open_clip is a test-only dependency (`pip install --no-deps open_clip_torch ftfy regex`); the parity tests skip when
it is not installed.
"""

import importlib.util
import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer, CLIPTokenizer

from scripts.build_clip_tokenizer import (
    CLIP_VOCAB_SIZE,
    NUM_MERGES,
    build_clip_tokenizer,
    byte_to_unicode_table,
)
from peft_interp.data.tokenizer import (
    CLIP_CONTEXT_LENGTH,
    CLIP_TOKENIZER_DIR,
    OpenAICLIPTokenizer,
    clean_clip_text,
    load_clip_tokenizer,
)


SAMPLE_TEXTS = [
    "a photo of a cat.",
    "A Photo Of A CAT",
    "a red-headed blue-bodied striped-winged long-tailed bird",
    "Hello, World!!! ... ?!? (parentheses) [brackets] {braces}",
    "numbers: 0 7 42 3.14159 1,000,000 2024-01-31 #1 $9.99 50%",
    "don't it's we're they've I'm you'll he'd I'LL DON'T",
    "café naïve résumé Ünïcödé Straße ΟΔΟΣ İstanbul",
    "日本語のテキスト 中文 한국어 русский текст العربية",
    "emoji 😀 🐦 👍🏽 ❤️",
    "&amp; &lt;b&gt;bold&lt;/b&gt; &amp;amp; &#233; &quot;quoted&quot; AT&T",
    "<b>html tags</b> <br/> e&#769;",
    "“curly quotes” ‘single’ — em dash … ellipsis",
    "ＦＵＬＬ ｗｉｄｔｈ ﬁne ligature",
    "mojibake: Ã©tÃ© cafÃ©",
    "  leading, trailing and   multiple   spaces \n\t newline\ttab  ",
    "snake_case camelCase kebab-case path/to/file.txt user@example.com https://example.com/a?b=c",
    "x" * 300,
    " ".join(["word"] * 100),
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "",
]


@pytest.fixture(scope="module")
def tokenizer():
    return load_clip_tokenizer()


@pytest.fixture(scope="module")
def open_clip_tokenizer_module():
    """open_clip's `tokenizer` module (a copy of OpenAI's `simple_tokenizer`), or skip if open_clip is missing.

    `import open_clip` imports torchvision, which this project does not install, so when that fails the tokenizer
    module is loaded on its own from the installed package's files.
    """
    for requirement in ("open_clip", "ftfy", "regex", "torch"):
        if importlib.util.find_spec(requirement) is None:
            pytest.skip(f"{requirement} is not installed (pip install --no-deps open_clip_torch ftfy regex)")
    try:
        from open_clip import tokenizer as module
    except ImportError:
        package_dir = Path(next(iter(importlib.util.find_spec("open_clip").submodule_search_locations)))
        spec = importlib.util.spec_from_file_location("open_clip_tokenizer", package_dir / "tokenizer.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def reference_tokenizer(open_clip_tokenizer_module):
    """open_clip's `SimpleTokenizer`: OpenAI's reference CLIP tokenizer."""
    return open_clip_tokenizer_module.SimpleTokenizer()


# ----------------------------------------------------------------------------------------------------------------
# The shipped files
# ----------------------------------------------------------------------------------------------------------------


def test_shipped_files_are_small_and_complete():
    names = {path.name for path in CLIP_TOKENIZER_DIR.iterdir()}
    assert {"vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json", "LICENSE"} <= names
    total_bytes = sum(path.stat().st_size for path in CLIP_TOKENIZER_DIR.iterdir())
    assert total_bytes < 3 * 2**20
    assert "MIT License" in (CLIP_TOKENIZER_DIR / "LICENSE").read_text()


def test_vocabulary_layout_follows_openai_clip():
    vocab = json.loads((CLIP_TOKENIZER_DIR / "vocab.json").read_text("utf-8"))
    assert len(vocab) == CLIP_VOCAB_SIZE
    assert sorted(vocab.values()) == list(range(CLIP_VOCAB_SIZE))
    byte_tokens = list(byte_to_unicode_table().values())
    assert [vocab[token] for token in byte_tokens] == list(range(256))
    assert [vocab[token + "</w>"] for token in byte_tokens] == list(range(256, 512))
    assert vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == 49407
    merges = (CLIP_TOKENIZER_DIR / "merges.txt").read_text("utf-8").splitlines()
    assert merges[0].startswith("#version") and len(merges) == 1 + NUM_MERGES
    assert vocab["".join(merges[1].split())] == 512  # the first merge is the first merged token


def test_loads_offline_with_plain_transformers_classes():
    for tokenizer_class in (CLIPTokenizer, AutoTokenizer):
        tokenizer = tokenizer_class.from_pretrained(CLIP_TOKENIZER_DIR)
        assert isinstance(tokenizer, CLIPTokenizer)
        assert len(tokenizer) == CLIP_VOCAB_SIZE
        assert tokenizer.model_max_length == CLIP_CONTEXT_LENGTH
        assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (49406, 49407, 49407)


def test_load_clip_tokenizer(tokenizer):
    assert isinstance(tokenizer, OpenAICLIPTokenizer) and isinstance(tokenizer, CLIPTokenizer)
    encoded = tokenizer("a photo of a bird.")["input_ids"]
    assert encoded[0] == 49406 and encoded[-1] == 49407
    assert tokenizer.decode(encoded, skip_special_tokens=True) == "a photo of a bird ."
    assert type(load_clip_tokenizer(openai_text_cleaning=False)) is CLIPTokenizer


def test_truncates_to_77_tokens(tokenizer):
    encoded = tokenizer(" ".join(["bird"] * 200), truncation=True)["input_ids"]
    assert len(encoded) == 77 and encoded[0] == 49406 and encoded[-1] == 49407


def test_clean_clip_text():
    assert clean_clip_text("  Hello &amp;amp;   WORLD\n") == "hello & world"


def test_clean_clip_text_applies_ftfy():
    pytest.importorskip("ftfy")
    assert clean_clip_text("“Quoted” ＡＢＣ") == '"quoted" abc'


def test_save_pretrained_round_trip(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "tokenizer_config.json").read_text())["tokenizer_class"] == "CLIPTokenizer"
    plain = AutoTokenizer.from_pretrained(tmp_path)
    assert type(plain) is CLIPTokenizer
    assert plain("A Red Bird")["input_ids"] == tokenizer("A Red Bird")["input_ids"]
    reloaded = OpenAICLIPTokenizer.from_pretrained(tmp_path)
    assert reloaded(SAMPLE_TEXTS)["input_ids"] == tokenizer(SAMPLE_TEXTS)["input_ids"]


# ----------------------------------------------------------------------------------------------------------------
# Parity with open_clip (OpenAI's reference tokenizer)
# ----------------------------------------------------------------------------------------------------------------


def test_build_script_reproduces_the_shipped_files(open_clip_tokenizer_module, tmp_path):
    build_clip_tokenizer(output_dir=tmp_path)
    for path in CLIP_TOKENIZER_DIR.iterdir():
        assert (tmp_path / path.name).read_bytes() == path.read_bytes(), path.name


def test_vocabulary_equals_open_clip(reference_tokenizer):
    vocab = json.loads((CLIP_TOKENIZER_DIR / "vocab.json").read_text("utf-8"))
    # open_clip spells the special tokens <start_of_text> / <end_of_text>; the ids are the same.
    renamed = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    assert {renamed.get(token, token): token_id for token, token_id in reference_tokenizer.encoder.items()} == vocab


@pytest.mark.parametrize("text", SAMPLE_TEXTS, ids=range(len(SAMPLE_TEXTS)))
def test_token_ids_equal_open_clip(reference_tokenizer, tokenizer, text):
    expected = reference_tokenizer.encode(text)
    assert tokenizer(text, add_special_tokens=False)["input_ids"] == expected
    assert tokenizer.tokenize(text) == [reference_tokenizer.decoder[token_id] for token_id in expected]


def test_padded_batch_equals_open_clip_tokenize(open_clip_tokenizer_module, tokenizer):
    expected = open_clip_tokenizer_module.tokenize(SAMPLE_TEXTS)  # (batch, 77), zero-padded
    encoded = tokenizer(SAMPLE_TEXTS, padding="max_length", truncation=True, return_tensors="pt")
    assert encoded["input_ids"].shape == expected.shape == (len(SAMPLE_TEXTS), 77)
    attended = encoded["attention_mask"].bool()
    assert (encoded["input_ids"][attended] == expected[attended]).all()
    # Only the padding differs: open_clip pads with 0, transformers with <|endoftext|>.
    assert (expected[~attended] == 0).all() and (encoded["input_ids"][~attended] == 49407).all()


def test_plain_transformers_tokenizer_differs_only_on_text_cleaning(reference_tokenizer):
    """Why `OpenAICLIPTokenizer` exists: without OpenAI's ftfy + html cleaning, some ids differ."""
    reference = reference_tokenizer
    plain = load_clip_tokenizer(openai_text_cleaning=False)
    for text in ("a photo of a cat.", "café naïve résumé", "don't it's I'LL"):
        assert plain(text, add_special_tokens=False)["input_ids"] == reference.encode(text)
    for text in ("&amp;", "“curly quotes”", "ＦＵＬＬ width", "ﬁne"):
        assert plain(text, add_special_tokens=False)["input_ids"] != reference.encode(text)
