"""Training checkpoints that lose nothing, written atomically, in safetensors + JSON only (nothing is unpickled).

A checkpoint is a folder ``checkpoint-{step}`` holding:

* ``adapter_config.json`` + ``adapter_model.safetensors``: the adapter, loadable on its own with
  ``PeftModel.from_pretrained``;
* ``optimizer.safetensors`` + ``optimizer.json`` and ``scheduler.json``: their ``state_dict()``, tensors split from
  the rest (:func:`split_tensors`);
* ``rng_state_{rank}.safetensors`` + ``.json``: torch (CPU and CUDA), NumPy and Python RNG states of every process;
* ``trainer_state.json``: the step, the data position and the log history.

It is first written to a hidden ``.tmp-checkpoint-{step}`` folder and then renamed, so a run killed while saving
leaves either the previous checkpoints or the complete new one; :func:`latest_checkpoint` ignores unfinished ones.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
TRAINER_STATE = "trainer_state.json"


# ------------------------------------------------------------------------------------------ tensors <-> JSON
def split_tensors(obj: Any, prefix: str = "t") -> tuple[Any, dict[str, torch.Tensor]]:
    """Replace every tensor in a nested dict/list by ``{"__tensor__": key}``; return (JSON-ready obj, tensors)."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(value: Any, path: str) -> Any:
        if isinstance(value, torch.Tensor):
            tensors[path] = value.detach().cpu().contiguous()
            return {"__tensor__": path}
        if isinstance(value, dict):
            return {"__dict__": [[walk(k, f"{path}.k{i}"), walk(v, f"{path}.{i}")] for i, (k, v) in enumerate(value.items())]}
        if isinstance(value, (list, tuple)):
            items = [walk(v, f"{path}.{i}") for i, v in enumerate(value)]
            return {"__tuple__": items} if isinstance(value, tuple) else items
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        raise TypeError(f"Cannot store a {type(value).__name__} in a checkpoint (at {path})")

    return walk(obj, prefix), tensors


def join_tensors(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`split_tensors`."""
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__tuple__" in obj:
            return tuple(join_tensors(v, tensors) for v in obj["__tuple__"])
        return {join_tensors(k, tensors): join_tensors(v, tensors) for k, v in obj["__dict__"]}
    if isinstance(obj, list):
        return [join_tensors(v, tensors) for v in obj]
    return obj


def save_state(state: Any, folder: Path, name: str) -> None:
    """``state`` (nested dicts/lists of tensors and JSON values) as ``name.safetensors`` + ``name.json``."""
    structure, tensors = split_tensors(state)
    save_file(tensors, folder / f"{name}.safetensors")
    (folder / f"{name}.json").write_text(json.dumps(structure))


def load_state(folder: Path, name: str) -> Any:
    structure = json.loads((folder / f"{name}.json").read_text())
    return join_tensors(structure, load_file(folder / f"{name}.safetensors"))


# -------------------------------------------------------------------------------------------------------- RNG
def rng_state() -> dict:
    numpy_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].copy()), *numpy_state[2:]],
        "python": random.getstate(),
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy(), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


# ----------------------------------------------------------------------------------------------- checkpoints
def checkpoint_dir(output_dir: Path, step: int) -> Path:
    return Path(output_dir) / f"checkpoint-{step}"


def staging_dir(output_dir: Path, step: int) -> Path:
    """Where checkpoint ``step`` is written before it is renamed into place."""
    return Path(output_dir) / f".tmp-checkpoint-{step}"


def _fsync_tree(folder: Path) -> None:
    for path in folder.iterdir():
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())


def publish(staging: Path, final: Path) -> None:
    """Make the fully written ``staging`` folder the checkpoint ``final`` in one rename."""
    _fsync_tree(staging)
    if final.exists():  # a checkpoint of the same step from an earlier run: keep it until the new one is in place
        old = final.with_name(f".old-{final.name}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(staging, final)
        shutil.rmtree(old)
    else:
        os.replace(staging, final)


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints in ``output_dir``, oldest first."""
    if not Path(output_dir).is_dir():
        return []
    found = [(int(m.group(1)), p) for p in Path(output_dir).iterdir() if (m := CHECKPOINT_PATTERN.match(p.name))]
    return [path for _, path in sorted(found) if (path / TRAINER_STATE).is_file()]


def latest_checkpoint(output_dir: Path) -> Path | None:
    checkpoints = list_checkpoints(output_dir)
    return checkpoints[-1] if checkpoints else None


def prune_checkpoints(output_dir: Path, keep: int | None) -> None:
    """Delete all but the newest ``keep`` checkpoints (and leftovers of interrupted saves)."""
    for leftover in Path(output_dir).glob(".tmp-checkpoint-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    if keep:
        for path in list_checkpoints(output_dir)[:-keep]:
            shutil.rmtree(path)
