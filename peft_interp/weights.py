"""Adapter weights that are verified when loaded.

When a peft-interp adapter is saved (``save_pretrained``, the trainer's checkpoints, ``save_for_hub``), the header
metadata of its ``adapter_model.safetensors`` records (:func:`record_weights_metadata`):

* ``peft_interp.sha256``: a SHA-256 over every tensor's name, dtype, shape and bytes, in name order;
* ``peft_interp.tensors``: ``{name: [dtype, shape]}`` of every tensor;
* ``peft_interp.peft_type``: the method that wrote them.

Every loading route (``PeftModel.from_pretrained``, ``model.load_adapter``, :func:`peft_interp.sharing.load_adapter`,
the command line) runs :func:`verify_weights_file` before PEFT reads the file: a truncated or unparsable file, a
changed byte, a missing/extra/reshaped tensor, weights of another method and non-finite values are each an error
that names the file; after loading, :func:`check_adapter_keys` makes sure no adapter parameter was left at its
random initialisation. Files written by other tools (no metadata) get every check except the hash.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

WEIGHTS_FILE = "adapter_model.safetensors"
PICKLE_WEIGHTS_FILE = "adapter_model.bin"
SHA_KEY, TENSORS_KEY, PEFT_TYPE_KEY = "peft_interp.sha256", "peft_interp.tensors", "peft_interp.peft_type"


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over ``name, dtype, shape, bytes`` of every tensor, in name order (independent of file layout)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(json.dumps([name, str(tensor.dtype), list(tensor.shape)]).encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _describe(tensors: dict[str, torch.Tensor]) -> dict[str, list]:
    return {name: [str(tensor.dtype).removeprefix("torch."), list(tensor.shape)] for name, tensor in tensors.items()}


def record_weights_metadata(path: str | Path, peft_type: str) -> None:
    """Rewrite the safetensors file ``path`` (atomically) with the hash, tensor list and ``peft_type`` in its header."""
    path = Path(path)
    tensors = _read_tensors(path)
    metadata = {"format": "pt", SHA_KEY: tensors_sha256(tensors), TENSORS_KEY: json.dumps(_describe(tensors)),
                PEFT_TYPE_KEY: str(getattr(peft_type, "value", peft_type))}  # fmt: skip
    staging = path.with_name(f".tmp-{path.name}")
    try:
        save_file(tensors, staging, metadata=metadata)
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        with safe_open(str(path), framework="pt") as weights:
            return {name: weights.get_tensor(name) for name in weights.keys()}
    except (SafetensorError, OSError, RuntimeError, ValueError) as error:
        raise ValueError(f"{path} is not a valid safetensors file (corrupted or truncated?): {error}") from error


def weights_path(folder: str | Path) -> Path:
    """``folder/adapter_model.safetensors``; refuses a folder with only pickled weights (never unpickled)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"adapter folder {folder} does not exist")
    path = folder / WEIGHTS_FILE
    if not path.is_file():
        if (folder / PICKLE_WEIGHTS_FILE).is_file():
            raise ValueError(f"{folder} holds only {PICKLE_WEIGHTS_FILE} (pickle): peft-interp loads safetensors "
                             f"only, never unpickles; re-save the adapter as {WEIGHTS_FILE}")  # fmt: skip
        raise FileNotFoundError(f"{path} not found: the adapter folder has no weights")
    return path


def verify_weights_file(path: str | Path, peft_type: str | None = None) -> dict[str, torch.Tensor]:
    """Check ``path`` as described in the module docstring; return its tensors. Raises ``ValueError`` naming it."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as weights:
            metadata = weights.metadata() or {}
    except (SafetensorError, OSError, RuntimeError, ValueError) as error:
        raise ValueError(f"{path} is not a valid safetensors file (corrupted or truncated?): {error}") from error
    tensors = _read_tensors(path)
    if TENSORS_KEY in metadata:
        recorded, found = json.loads(metadata[TENSORS_KEY]), _describe(tensors)
        missing, extra = sorted(recorded.keys() - found.keys()), sorted(found.keys() - recorded.keys())
        changed = sorted(name for name in recorded.keys() & found.keys() if recorded[name] != found[name])
        if missing or extra or changed:
            raise ValueError(f"{path}: the tensors differ from those recorded when it was saved (missing {missing[:5]}, "
                             f"unexpected {extra[:5]}, changed dtype/shape {changed[:5]})")  # fmt: skip
    if SHA_KEY in metadata and tensors_sha256(tensors) != metadata[SHA_KEY]:
        raise ValueError(f"{path}: the weights' SHA-256 does not match the one recorded when it was saved: the file was "
                         "modified or damaged (bit rot?); restore it from a good copy")  # fmt: skip
    expected = str(getattr(peft_type, "value", peft_type)) if peft_type is not None else None
    if expected is not None and PEFT_TYPE_KEY in metadata and metadata[PEFT_TYPE_KEY] != expected:
        raise ValueError(f"{path} holds weights of a {metadata[PEFT_TYPE_KEY].split(':')[0]} adapter but its "
                         f"adapter_config.json says peft_type {expected.split(':')[0]}: the config and the weights "
                         "do not belong together")  # fmt: skip
    bad = [name for name, tensor in tensors.items() if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
    if bad:
        raise ValueError(f"{path}: tensors {bad[:5]} hold NaN or infinite values (a diverged training?); refusing "
                         "to load them")  # fmt: skip
    return tensors


def check_adapter_keys(model, adapter_name: str, saved: dict[str, torch.Tensor], path: str | Path) -> None:
    """Raise if the file's tensors are not exactly the adapter's parameters (a missing one would stay random)."""
    from peft.utils import get_peft_model_state_dict

    expected = get_peft_model_state_dict(model, adapter_name=adapter_name, save_embedding_layers=False)
    missing, extra = sorted(expected.keys() - saved.keys()), sorted(saved.keys() - expected.keys())
    if missing or extra:
        peft_type = model.peft_config[adapter_name].peft_type
        raise ValueError(
            f"{path} does not hold the parameters of this {str(peft_type.value).split(':')[0]} adapter (peft_type in "
            f"adapter_config.json): missing {missing[:5]}{' ...' if len(missing) > 5 else ''}, unexpected "
            f"{extra[:5]}{' ...' if len(extra) > 5 else ''}; a missing tensor would stay randomly initialised"
        )
    wrong = [name for name in expected if tuple(expected[name].shape) != tuple(saved[name].shape)]
    if wrong:
        raise ValueError(f"{path}: tensors {wrong[:5]} have shapes {[tuple(saved[n].shape) for n in wrong[:5]]}, the "
                         f"adapter expects {[tuple(expected[n].shape) for n in wrong[:5]]}")  # fmt: skip
