"""Loaders for the datasets of the papers' tables, from the on-disk layouts users already have.

* the 11 prompt-learning datasets and the ImageNet variants, as the CoOp code base lays them out and splits them
  (:mod:`.coop`);
* CUB-200-2011 with boxes and part keypoints, and the bounding-box crop of the part protocol (:mod:`.cub`);
* each dataset's hand-written zero-shot template (:mod:`.templates`).

``load_benchmark_dataset("oxford_pets", "/data/oxford_pets", "train")`` returns a ``datasets.Dataset`` (``image``,
``label`` as ``ClassLabel`` with the papers' class names). With the CoOp convention of one ``$DATA`` folder holding
every dataset under its documented name, ``dataset_folder("oxford_pets", "$DATA")`` is ``$DATA/oxford_pets``.
On the command line, ``--dataset oxford_pets:/data/oxford_pets`` names the same thing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from datasets import Dataset

from .common import DatasetLayoutError
from .coop import (
    IMAGENET_VARIANTS,
    SPLIT_FILE_DATASETS,
    load_fgvc_aircraft,
    load_imagenet,
)
from .cub import BOX_COLUMN, cub_class_names, cub_part_protocol, load_cub
from .templates import DEFAULT_TEMPLATE, TEMPLATES, dataset_template


@dataclass(frozen=True)
class BenchmarkDataset:
    """One dataset of the papers' tables."""

    name: str  # key, as in the CoOp code base's configs (configs/datasets/<name>.yaml)
    title: str  # display name in tables
    folder: str  # its folder under $DATA
    splits: tuple[str, ...]
    load: Callable[[str | Path, str], Dataset]  # (dataset folder, split) -> Dataset

    @property
    def template(self) -> str:
        return dataset_template(self.name)


def _registry() -> dict[str, BenchmarkDataset]:
    entries = [BenchmarkDataset("imagenet", "ImageNet", "imagenet", ("train", "val", "test"), load_imagenet)]
    for name, spec in SPLIT_FILE_DATASETS.items():
        entries.append(BenchmarkDataset(name, spec.title, spec.folder, ("train", "val", "test"), spec.load))
    entries.append(BenchmarkDataset("fgvc_aircraft", "FGVCAircraft", "fgvc_aircraft", ("train", "val", "test"),
                                    load_fgvc_aircraft))  # fmt: skip
    for name, spec in IMAGENET_VARIANTS.items():
        entries.append(BenchmarkDataset(name, spec.title, spec.folder, ("test",), spec.load))
    entries.append(BenchmarkDataset("cub", "CUB-200-2011", "CUB_200_2011", ("train", "test"), load_cub))
    return {entry.name: entry for entry in entries}


BENCHMARK_DATASETS = _registry()
# The 11 datasets of the CoOp / CoCoOp tables, in their order.
COOP_DATASETS = ("imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101",
                 "fgvc_aircraft", "sun397", "dtd", "eurosat", "ucf101")  # fmt: skip
IMAGENET_SHIFTS = ("imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r")


def benchmark_dataset(name: str) -> BenchmarkDataset:
    if name not in BENCHMARK_DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {sorted(BENCHMARK_DATASETS)}")
    return BENCHMARK_DATASETS[name]


def dataset_folder(name: str, data_root: str | Path) -> Path:
    """``data_root / <the dataset's documented folder name>``."""
    return Path(data_root) / benchmark_dataset(name).folder


def load_benchmark_dataset(name: str, root: str | Path, split: str) -> Dataset:
    """Dataset ``name`` read from its folder ``root`` (e.g. ``$DATA/caltech-101``); ``split`` "train" / "val" / "test"
    (the ImageNet variants: "test"; CUB: "train" / "test"). A missing file stops with a
    :class:`DatasetLayoutError` naming it and the expected layout."""
    spec = benchmark_dataset(name)
    if not Path(root).is_dir():
        raise DatasetLayoutError(f"{spec.title}: the dataset folder {root} does not exist")
    return spec.load(root, split)


__all__ = [
    "BENCHMARK_DATASETS",
    "BOX_COLUMN",
    "COOP_DATASETS",
    "DEFAULT_TEMPLATE",
    "IMAGENET_SHIFTS",
    "TEMPLATES",
    "BenchmarkDataset",
    "DatasetLayoutError",
    "benchmark_dataset",
    "cub_class_names",
    "cub_part_protocol",
    "dataset_folder",
    "dataset_template",
    "load_benchmark_dataset",
    "load_cub",
]
