"""Build the files of OpenAI CLIP's BPE tokenizer for offline use with `transformers.CLIPTokenizer`.

The Hub is out of reach here, but OpenAI's CLIP BPE vocabulary ships inside the `open_clip_torch` wheel as
`open_clip/bpe_simple_vocab_16e6.txt.gz`. This script turns that file into the `vocab.json` / `merges.txt` pair
that `transformers.CLIPTokenizer.from_pretrained` reads, exactly the way OpenAI's `SimpleTokenizer` builds its
vocabulary:

    ids 0..255         the 256 byte tokens (GPT-2's reversible byte -> unicode mapping)
    ids 256..511       the same 256 byte tokens followed by the end-of-word marker `</w>`
    ids 512..49405     one token per merge, in merge-rank order (48,894 merges: lines 1..48894 of the file)
    id  49406          `<|startoftext|>`
    id  49407          `<|endoftext|>`

for 49,408 tokens in all. The output is shipped in `peft_interp/data/clip_tokenizer/`, so this build-time script
(not part of the installed package) only has to be re-run, from the repository root, to rebuild those files:

    pip install --no-deps open_clip_torch   # --no-deps: its dependencies would pull a CUDA build of torch
    python scripts/build_clip_tokenizer.py

License / provenance: the BPE vocabulary and merges are OpenAI's CLIP vocabulary (https://github.com/openai/CLIP,
MIT License, Copyright (c) 2021 OpenAI), as redistributed by open_clip (https://github.com/mlfoundations/open_clip,
MIT License). The shipped folder carries that notice in its `LICENSE` file.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
from pathlib import Path


BPE_FILE_NAME = "bpe_simple_vocab_16e6.txt.gz"
DEFAULT_OUTPUT_DIR = Path(__file__).resolve().parents[1] / "peft_interp" / "data" / "clip_tokenizer"

CLIP_VOCAB_SIZE = 49408
NUM_BYTE_TOKENS = 256
# OpenAI's SimpleTokenizer keeps lines 1 .. 49152-256-2 of the file (line 0 is a version header).
NUM_MERGES = 49152 - NUM_BYTE_TOKENS - 2
END_OF_WORD = "</w>"
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
CONTEXT_LENGTH = 77

LICENSE_NOTICE = """\
The files vocab.json and merges.txt in this folder are derived from OpenAI CLIP's BPE vocabulary
(bpe_simple_vocab_16e6.txt.gz), as redistributed in the open_clip_torch package, by
peft_interp/data/build_clip_tokenizer.py.

  OpenAI CLIP:  https://github.com/openai/CLIP                 MIT License, Copyright (c) 2021 OpenAI
  open_clip:    https://github.com/mlfoundations/open_clip     MIT License, Copyright (c) 2012-2021 Gabriel Ilharco,
                Mitchell Wortsman, Nicholas Carlini, Rohan Taori, Achal Dave, Vaishaal Shankar, John Miller,
                Hongseok Namkoong, Hannaneh Hajishirzi, Ali Farhadi, Ludwig Schmidt

MIT License

Permission is hereby granted, free of charge, to any person obtaining a copy of this software and associated
documentation files (the "Software"), to deal in the Software without restriction, including without limitation the
rights to use, copy, modify, merge, publish, distribute, sublicense, and/or sell copies of the Software, and to permit
persons to whom the Software is furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all copies or substantial portions of the
Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT NOT LIMITED TO THE
WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR
COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR
OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
"""


def byte_to_unicode_table() -> dict[int, str]:
    """GPT-2's reversible mapping from the 256 byte values to printable unicode characters.

    Printable latin-1 bytes map to themselves; the other bytes (control characters, space, ...) map to code points
    256 and up, in byte order. The table's insertion order (printable bytes first) is the order of CLIP's first 256
    vocabulary entries.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {byte: chr(byte) for byte in printable}
    num_remapped = 0
    for byte in range(NUM_BYTE_TOKENS):
        if byte not in table:
            table[byte] = chr(NUM_BYTE_TOKENS + num_remapped)
            num_remapped += 1
    return table


def find_open_clip_bpe_file() -> Path:
    """Locates `bpe_simple_vocab_16e6.txt.gz` inside the installed `open_clip` package, without importing it.

    (Importing `open_clip` pulls in torchvision; `find_spec` on a top-level package does not run its `__init__`.)
    """
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "open_clip is not installed: `pip install --no-deps open_clip_torch` (always with --no-deps), "
            "or pass --bpe-path."
        )
    return Path(next(iter(spec.submodule_search_locations))) / BPE_FILE_NAME


def read_bpe_merges(bpe_path: str | Path) -> list[tuple[str, str]]:
    """Reads the merges CLIP uses from its gzipped BPE file, in rank order (`NUM_MERGES` pairs)."""
    lines = gzip.decompress(Path(bpe_path).read_bytes()).decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : NUM_MERGES + 1]]
    malformed = [merge for merge in merges if len(merge) != 2]
    if len(merges) != NUM_MERGES or malformed:
        raise ValueError(f"{bpe_path} is not CLIP's BPE file: {len(merges)} merges, {len(malformed)} malformed")
    return merges


def build_clip_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
    """Token -> id, in the order of OpenAI's `SimpleTokenizer` (see the module docstring)."""
    byte_tokens = list(byte_to_unicode_table().values())
    tokens = byte_tokens + [token + END_OF_WORD for token in byte_tokens]
    tokens += ["".join(merge) for merge in merges]
    tokens += [BOS_TOKEN, EOS_TOKEN]
    vocab = {token: token_id for token_id, token in enumerate(tokens)}
    if len(vocab) != CLIP_VOCAB_SIZE:
        raise ValueError(f"expected {CLIP_VOCAB_SIZE} distinct tokens, built {len(vocab)}")
    return vocab


def tokenizer_config() -> dict:
    """The `tokenizer_config.json` that makes `CLIPTokenizer.from_pretrained` load the folder like the Hub's CLIP."""
    return {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": CONTEXT_LENGTH,
        "bos_token": BOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "unk_token": EOS_TOKEN,
        "pad_token": EOS_TOKEN,
        "do_lower_case": True,
        "add_prefix_space": False,
        "errors": "replace",
        "clean_up_tokenization_spaces": False,
    }


def special_tokens_map() -> dict[str, str]:
    return {"bos_token": BOS_TOKEN, "eos_token": EOS_TOKEN, "unk_token": EOS_TOKEN, "pad_token": EOS_TOKEN}


def write_json(path: Path, payload: dict) -> None:
    path.write_text(json.dumps(payload, ensure_ascii=False, indent=None if len(payload) > 100 else 2) + "\n", "utf-8")


def write_tokenizer_files(output_dir: str | Path, vocab: dict[str, int], merges: list[tuple[str, str]]) -> list[Path]:
    """Writes vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json and LICENSE to `output_dir`."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_json(output_dir / "vocab.json", vocab)
    merges_text = "#version: 0.2\n" + "".join(f"{first} {second}\n" for first, second in merges)
    (output_dir / "merges.txt").write_text(merges_text, "utf-8")
    write_json(output_dir / "tokenizer_config.json", tokenizer_config())
    write_json(output_dir / "special_tokens_map.json", special_tokens_map())
    (output_dir / "LICENSE").write_text(LICENSE_NOTICE, "utf-8")
    return sorted(output_dir.iterdir())


def build_clip_tokenizer(bpe_path: str | Path | None = None, output_dir: str | Path = DEFAULT_OUTPUT_DIR) -> list[Path]:
    """Builds the tokenizer folder from CLIP's BPE file (by default the one inside the installed open_clip)."""
    merges = read_bpe_merges(bpe_path or find_open_clip_bpe_file())
    return write_tokenizer_files(output_dir, build_clip_vocab(merges), merges)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bpe-path", type=Path, default=None, help=f"path to {BPE_FILE_NAME} (default: open_clip's)")
    parser.add_argument("--output-dir", type=Path, default=DEFAULT_OUTPUT_DIR)
    args = parser.parse_args(argv)
    for path in build_clip_tokenizer(args.bpe_path, args.output_dir):
        print(f"{path.stat().st_size:>10,d}  {path}")


if __name__ == "__main__":
    main()
