"""Shared pieces of the on-disk dataset loaders: layout checks with clear errors, and ``datasets.Dataset`` building.

Every loader returns a ``datasets.Dataset`` with an ``image`` column (``datasets.Image``, decoded lazily from the
file) and a ``label`` column (``ClassLabel`` whose names are the class names the papers prompt with), plus
dataset-specific columns (CUB: boxes and part keypoints).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from datasets import ClassLabel, Dataset, Features, Image, Value

SPLITS = ("train", "val", "test")


class DatasetLayoutError(FileNotFoundError):
    """A dataset folder does not have the documented layout (the message names the missing file or folder)."""


def require(root: Path, relative: str | Path, dataset: str, layout: str, kind: str = "file") -> Path:
    """``root / relative``, or a :class:`DatasetLayoutError` naming it and showing the expected ``layout``."""
    path = Path(root) / relative
    present = path.is_dir() if kind == "folder" else path.is_file()
    if not present:
        raise DatasetLayoutError(
            f"{dataset}: the {kind} {relative} is missing under {root} (looked for {path}). Expected layout:\n{layout}"
        )
    return path


def require_images(paths: Sequence[str], dataset: str, listed_in: str) -> None:
    """Stop at the first listed image that does not exist, naming it and the file that lists it."""
    for path in paths:
        if not Path(path).is_file():
            raise DatasetLayoutError(f"{dataset}: image {path} (listed in {listed_in}) does not exist")


def check_split(split: str, dataset: str, splits: Iterable[str] = SPLITS) -> None:
    splits = tuple(splits)
    if split not in splits:
        raise ValueError(f"{dataset} has the splits {list(splits)}, got split={split!r}")


def image_dataset(paths: Sequence[str], labels: Sequence[int], class_names: Sequence[str], **extra_columns) -> Dataset:
    """A ``Dataset`` of image files with ``ClassLabel`` labels (and ``extra_columns``: name -> (values, feature))."""
    features = {"image": Image(), "label": ClassLabel(names=list(class_names))}
    data = {"image": [str(path) for path in paths], "label": [int(label) for label in labels]}
    for name, (values, feature) in extra_columns.items():
        features[name], data[name] = feature, values
    return Dataset.from_dict(data, features=Features(features))


def read_lines(path: Path) -> list[str]:
    return [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]


# ------------------------------------------------------------------------------------------- split_zhou_*.json
def read_split_file(path: Path, image_dir: Path, split: str, dataset: str) -> tuple[list[str], list[int], list[str]]:
    """``(image paths, labels, class names)`` of ``split`` in a CoOp split file.

    The file is ``{"train": [[relative path, label, class name], ...], "val": [...], "test": [...]}`` with paths
    relative to the dataset's image folder. Class names come from every split's entries (label -> name), and must
    be one name per label id ``0..n-1``.
    """
    try:
        entries = json.loads(Path(path).read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{dataset}: {path} is not valid JSON ({error})") from error
    if not isinstance(entries, dict) or split not in entries:
        found = sorted(entries) if isinstance(entries, dict) else type(entries).__name__
        raise ValueError(f"{dataset}: {path} has no {split!r} list (found {found}); expected keys {list(SPLITS)}")
    names: dict[int, str] = {}
    for key, rows in entries.items():
        for row in rows:
            if not (isinstance(row, list) and len(row) == 3):
                raise ValueError(f"{dataset}: {path} [{key!r}] rows must be [path, label, class name], got {row!r}")
            label, name = int(row[1]), str(row[2])
            if names.setdefault(label, name) != name:
                raise ValueError(f"{dataset}: {path} gives label {label} two names, {names[label]!r} and {name!r}")
    class_names = contiguous_names(names, f"{dataset}: {path}")
    rows = entries[split]
    paths = [str(Path(image_dir) / row[0]) for row in rows]
    require_images(paths, dataset, Path(path).name)
    return paths, [int(row[1]) for row in rows], class_names


def contiguous_names(names: dict[int, str], where: str) -> list[str]:
    """Names of labels ``0..n-1`` from a label -> name map, or an error naming the missing ids."""
    missing = sorted(set(range(len(names))) - set(names))
    if missing:
        raise ValueError(f"{where}: labels must be 0..{len(names) - 1}; ids {missing[:5]} have no entry")
    return [names[label] for label in range(len(names))]


BOX_FEATURE = [Value("float32")]
