"""The CLIP text cleaning without ftfy: one warning, pointing at the caller of ``clean_clip_text``."""

from __future__ import annotations

import sys
import warnings

from peft_interp.data import tokenizer


def test_missing_ftfy_warns_once_at_the_callers_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "ftfy", None)  # `import ftfy` raises ImportError
    tokenizer._ftfy_fix_text.cache_clear()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert tokenizer.clean_clip_text("  A  Photo &amp;amp; ") == "a photo &"
            assert tokenizer.clean_clip_text("Two") == "two"
    finally:
        tokenizer._ftfy_fix_text.cache_clear()  # the next caller imports the real ftfy again
    messages = [w for w in caught if "ftfy is not installed" in str(w.message)]
    assert len(messages) == 1
    assert messages[0].filename == __file__  # stacklevel: the code that asked for the cleaning
