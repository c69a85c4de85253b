"""Training checkpoints that lose nothing, written atomically, in safetensors + JSON only (nothing is unpickled).

A checkpoint is a folder ``checkpoint-{step}`` holding:

* ``adapter_config.json`` + ``adapter_model.safetensors``: the adapter, loadable on its own with
  ``PeftModel.from_pretrained``;
* ``optimizer.safetensors`` + ``optimizer.json`` and ``scheduler.json``: their ``state_dict()``, tensors split from
  the rest (:func:`split_tensors`);
* ``rng_state_{rank}.safetensors`` + ``.json``: torch (CPU and CUDA), NumPy and Python RNG states of every process;
* ``trainer_state.json``: the step, the data position and the log history.

* ``manifest.json``, written last: the step, the run it belongs to and the SHA-256 and size of every other file.

It is first written to a hidden ``.tmp-checkpoint-{step}`` folder and then renamed, so a run killed while saving
leaves either the previous checkpoints or the complete new one; :func:`latest_checkpoint` ignores unfinished ones
and :func:`recover_leftovers` tidies what a kill between the renames or a full disk left behind. A checkpoint is
resumed only after :func:`verify_checkpoint` has checked it as a whole against its manifest.

The output folder belongs to one run: ``run.json`` holds its id, every checkpoint's manifest names the run that
wrote it, and a run lists, resumes from and prunes only its own checkpoints (:func:`list_checkpoints`).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
TRAINER_STATE = "trainer_state.json"
MANIFEST = "manifest.json"
RUN_FILE = "run.json"


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


# ------------------------------------------------------------------------------------------------- manifests
def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: Path, step: int, run_id: str) -> None:
    """Write ``manifest.json`` (last): the step, the run and the SHA-256 and size of every file of ``folder``."""
    files = {path.name: {"sha256": file_sha256(path), "size": path.stat().st_size}
             for path in sorted(Path(folder).iterdir()) if path.name != MANIFEST}  # fmt: skip
    (Path(folder) / MANIFEST).write_text(json.dumps({"step": step, "run_id": run_id, "files": files}, indent=2))


def read_manifest(folder: Path) -> dict | None:
    """The manifest of ``folder``, or None when it has none (unfinished, or not a checkpoint) or it is unreadable."""
    try:
        manifest = json.loads((Path(folder) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and isinstance(manifest.get("files"), dict) else None


def verify_checkpoint(folder: Path) -> dict:
    """Check ``folder`` against its manifest (every file present, none added, same size and SHA-256, the step of
    its name); return the manifest. Raises ``ValueError`` naming the folder and the file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"checkpoint {folder} does not exist")
    manifest = read_manifest(folder)
    if manifest is None:
        raise ValueError(f"checkpoint {folder} has no valid {MANIFEST}: it is incomplete, damaged, or was written by "
                         "an older peft-interp; it cannot be resumed from safely")  # fmt: skip
    match = CHECKPOINT_PATTERN.match(folder.name)
    if match and int(match.group(1)) != manifest.get("step"):
        raise ValueError(f"checkpoint {folder}: {MANIFEST} is for step {manifest.get('step')}, the folder's name says "
                         f"{match.group(1)}")  # fmt: skip
    present = {path.name for path in folder.iterdir()} - {MANIFEST}
    for name in sorted(present - manifest["files"].keys()):
        raise ValueError(f"checkpoint {folder}: file {name} is not in {MANIFEST} (added after the checkpoint was made)")
    for name, record in sorted(manifest["files"].items()):
        path = folder / name
        if not path.is_file():
            raise ValueError(f"checkpoint {folder}: file {name} listed in {MANIFEST} is missing")
        if path.stat().st_size != record.get("size") or file_sha256(path) != record.get("sha256"):
            raise ValueError(f"checkpoint {folder}: file {name} does not match its SHA-256 in {MANIFEST} (modified, "
                             "damaged or copied from another checkpoint)")  # fmt: skip
    return manifest


# ------------------------------------------------------------------------------------------------ the run
def read_run_id(output_dir: Path) -> str | None:
    """The id of the run that owns ``output_dir`` (its ``run.json``), or None."""
    try:
        return json.loads((Path(output_dir) / RUN_FILE).read_text())["run_id"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_run_id(output_dir: Path, run_id: str | None = None) -> str:
    """Make ``output_dir`` belong to the run ``run_id`` (a new id when None); returns it."""
    run_id = run_id or uuid.uuid4().hex
    staging = Path(output_dir) / f".tmp-{RUN_FILE}"
    staging.write_text(json.dumps({"run_id": run_id}))
    os.replace(staging, Path(output_dir) / RUN_FILE)
    return run_id


def list_checkpoint_folders(output_dir: Path) -> list[Path]:
    """Every ``checkpoint-{step}`` folder in ``output_dir``, complete or not, of any run, oldest first."""
    if not Path(output_dir).is_dir():
        return []
    found = [(int(m.group(1)), p) for p in Path(output_dir).iterdir() if (m := CHECKPOINT_PATTERN.match(p.name))]
    return [path for _, path in sorted(found)]


def list_checkpoints(output_dir: Path, run_id: str | None = None) -> list[Path]:
    """Complete checkpoints in ``output_dir`` (with a manifest), oldest first; only run ``run_id``'s when given."""
    complete = []
    for path in list_checkpoint_folders(output_dir):
        manifest = read_manifest(path)
        if manifest is not None and (run_id is None or manifest.get("run_id") == run_id):
            complete.append(path)
    return complete


def latest_checkpoint(output_dir: Path, run_id: str | None = None) -> Path | None:
    checkpoints = list_checkpoints(output_dir, run_id)
    return checkpoints[-1] if checkpoints else None


def prune_checkpoints(output_dir: Path, keep: int | None, run_id: str | None = None) -> None:
    """Delete all but the newest ``keep`` checkpoints of run ``run_id`` (never another run's) and leftovers of
    interrupted saves."""
    for leftover in Path(output_dir).glob(".tmp-checkpoint-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    if keep is not None and keep < 1:
        raise ValueError(f"save_total_limit must be None (keep all) or >= 1, got {keep}")
    if keep:
        for path in list_checkpoints(output_dir, run_id)[:-keep]:
            shutil.rmtree(path)


def recover_leftovers(output_dir: Path) -> list[str]:
    """Tidy what interrupted saves left in ``output_dir``; returns what was done, one line each.

    A kill between the two renames of :func:`publish` leaves ``.old-X`` (the previous folder) and maybe a complete
    ``.tmp-X``: the complete new folder is put in place if there is one (a checkpoint only when its manifest
    verifies), else the old one is restored. Then ``.tmp-*`` folders (unfinished saves, e.g. after a full disk) are
    removed.
    """
    output_dir, done = Path(output_dir), []
    for old in sorted(output_dir.glob(".old-*")):
        if not _ours(old.name.removeprefix(".old-")):
            continue
        final, staging = old.with_name(old.name.removeprefix(".old-")), old.with_name(".tmp-" + old.name.removeprefix(".old-"))
        if not final.exists() and staging.is_dir() and _complete(staging, final.name):
            os.replace(staging, final)
            done.append(f"finished the interrupted save of {final.name}")
        if final.exists():
            shutil.rmtree(old) if old.is_dir() else old.unlink()
            done.append(f"removed {old.name}, replaced by {final.name}")
        else:
            os.replace(old, final)
            done.append(f"restored {final.name} from {old.name}")
    for staging in sorted(output_dir.glob(".tmp-*")):
        if not _ours(staging.name.removeprefix(".tmp-")):
            continue
        shutil.rmtree(staging) if staging.is_dir() else staging.unlink()
        done.append(f"removed the unfinished {staging.name}")
    return done


def _ours(name: str) -> bool:
    """Whether ``.tmp-NAME`` / ``.old-NAME`` is a leftover of our saves (never touch anyone else's hidden files)."""
    return bool(CHECKPOINT_PATTERN.match(name)) or name in ("adapter", RUN_FILE)


def _complete(staging: Path, name: str) -> bool:
    """Whether the unfinished-rename folder ``staging`` holds a complete ``name`` (checkpoint or adapter)."""
    match = CHECKPOINT_PATTERN.match(name)
    try:
        if match:
            return verify_checkpoint(staging).get("step") == int(match.group(1))
        from ..weights import verify_weights_file

        json.loads((staging / "adapter_config.json").read_text())
        verify_weights_file(staging / "adapter_model.safetensors")
        return True
    except (OSError, ValueError):
        return False


def resume_hint(output_dir: Path) -> Path | None:
    """The newest checkpoint of the run that owns ``output_dir`` (what ``--resume`` would continue from)."""
    return latest_checkpoint(output_dir, read_run_id(output_dir))


# ------------------------------------------------------------------------------------------- the output folder
ADAPTER_FILES = {"adapter_config.json", "adapter_model.safetensors", "README.md"}  # what save_pretrained writes


def claim_output_dir(output_dir: Path, resume: bool | str | Path, overwrite: bool, adapter_name: str = "adapter",
                     dry_run: bool = False) -> str | None:  # fmt: skip
    """Check ``output_dir`` before any training and make it this run's; returns the run id.

    * it must be (or become) a writable folder: a file or a read-only folder fails here, not at the first save;
    * leftovers of interrupted saves are tidied (:func:`recover_leftovers`);
    * ``adapter_name/`` may hold only what ``save_pretrained`` writes, as the final adapter replaces it;
    * without ``resume``, a folder that is not empty (another run, or anything else) is refused unless
      ``overwrite`` (then the files there are kept; checkpoints and ``adapter/`` of the same names are replaced);
    * ``resume=True`` continues the run that owns the folder; ``resume=FOLDER`` continues that checkpoint's run,
      refused when the folder belongs to another run unless ``overwrite``.

    ``dry_run`` makes every check (creating the folder if needed) without taking it: the command line runs it
    before loading any data, the trainer again before step 1.
    """
    take = (lambda run_id=None: run_id) if dry_run else (lambda run_id=None: write_run_id(out, run_id))
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"output_dir {out} is a file, not a folder: choose another --output-dir")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"peft-interp")
        probe.unlink()
    except OSError as error:
        raise PermissionError(f"output_dir {out} is not writable ({error.strerror or error}): checkpoints and the "
                              "adapter are written there; choose another --output-dir") from error  # fmt: skip
    if not dry_run:  # (the command line's dry run happens on every process at once)
        recover_leftovers(out)
    adapter = out / adapter_name
    if adapter.exists() and not adapter.is_dir():
        raise FileExistsError(f"{adapter} is a file: the final adapter folder is written there; move it elsewhere")
    if adapter.is_dir():
        foreign = sorted(path.name for path in adapter.iterdir() if path.name not in ADAPTER_FILES)
        if foreign:
            raise FileExistsError(f"{adapter} holds files peft-interp did not write ({foreign[:5]}): the final adapter "
                                  "replaces that folder, so move them elsewhere first")  # fmt: skip
    owner = read_run_id(out)
    if resume and not isinstance(resume, bool):
        manifest = read_manifest(Path(resume))
        checkpoint_run = manifest.get("run_id") if manifest else None
        if owner is not None and checkpoint_run != owner and not overwrite:
            raise FileExistsError(f"--resume {resume} belongs to another run than the one in output_dir {out}: pass "
                                  "--overwrite-output-dir to continue it there, or choose another --output-dir")  # fmt: skip
        return take(checkpoint_run or owner)
    if resume and owner is not None:
        return owner
    runs = {read_manifest(path).get("run_id") for path in list_checkpoints(out)}
    if resume and len(runs) == 1:  # checkpoints of one run, moved here without run.json: continue that run
        return take(runs.pop())
    entries = sorted(path.name for path in out.iterdir())
    if entries and not overwrite:
        what = "another training run" if owner or list_checkpoints(out) or adapter.exists() else "files"
        action = ("there is no run of this version to resume; " if resume else
                  "pass --resume to continue it, " if what != "files" else "pass ")  # fmt: skip
        raise FileExistsError(
            f"output_dir {out} is not empty, it holds {what} ({', '.join(entries[:5])}{', ...' if len(entries) > 5 else ''}): "
            f"{action}--overwrite-output-dir to start a new run there (other files are kept, checkpoints and "
            f"{adapter_name}/ of the same names are replaced), or choose another --output-dir"
        )
    return take()
