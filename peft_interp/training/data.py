"""Image classification data for training and evaluation: any ``datasets`` image dataset, checked before use.

* :func:`load_image_dataset` — ``"conceptworld"`` (generated offline), ``"imagefolder:PATH"`` or a local folder
  (the ``imagefolder`` builder: one sub-folder per class), or a Hub dataset id.
* :func:`validate_image_dataset` — missing columns, labels outside the class list, a class list that does not match
  the label feature, duplicate class names (also up to case), unreadable images, image modes we cannot convert:
  each stops with a message naming the column/field/file and what was expected. An image folder with an empty class
  folder is refused (the builder would drop that class without a word); 16-bit images are scaled, not saturated.
* :func:`few_shot` and :func:`base_novel_classes` / :func:`select_classes` — the protocol of CoOp and CoCoOp (Zhou et
  al., IJCV 2022 and CVPR 2022; public code KaiyangZhou/CoOp): ``K`` images per class with a fixed seed; base = the
  first ``ceil(n / 2)`` sorted label ids, novel = the rest, each relabelled ``0..n'-1`` and evaluated as its own
  n'-way problem.
* :class:`ImageCollator` — examples -> ``{"pixel_values": (B, 3, S, S), "labels": (B,), ["attributes": B words]}``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from datasets import ClassLabel, Dataset, load_dataset
from datasets import Image as ImageFeature
from PIL import Image
from tqdm.auto import tqdm

from ..data.preprocessing import CONVERTIBLE_MODES, ImageTransform
from ..validation import check_class_names


@dataclass(frozen=True)
class Columns:
    """Which dataset columns hold what (``--image-column`` etc. on the command line)."""

    image: str = "image"
    label: str = "label"
    attribute: str | None = None  # IntCoOp's attribute word per image, optional

    def names(self) -> list[str]:
        return [name for name in (self.image, self.label, self.attribute) if name is not None]


# ------------------------------------------------------------------------------------------------------ loading
def load_image_dataset(source: str, split: str, shots: int | None = None, seed: int = 0, image_size: int | None = None):
    """A ``datasets.Dataset`` from ``source``:

    * ``"conceptworld"``: the ConceptWorld ``split`` ("base_train", "novel_test", ...), generated offline;
      ``shots`` images per class (``seed`` picks them), ``image_size`` pixels;
    * ``"imagefolder:PATH"`` or an existing folder ``PATH``: the ``imagefolder`` builder (class = sub-folder name);
    * ``"NAME:PATH"`` with ``NAME`` one of :data:`peft_interp.datasets.BENCHMARK_DATASETS` (``caltech101``, ``cub``,
      ...): that dataset's loader on its folder ``PATH`` in the documented layout;
    * anything else: a dataset on the Hub (``load_dataset(source, split=split)``).
    Few-shot sampling of non-ConceptWorld data is :func:`few_shot`, applied by the caller.
    """
    if source == "conceptworld":
        from ..data import load_conceptworld

        return load_conceptworld(split, shots=shots, seed=seed, image_size=image_size)
    from ..datasets import BENCHMARK_DATASETS, load_benchmark_dataset

    name, sep, root = source.partition(":")
    if name in BENCHMARK_DATASETS:
        if not sep or not root:
            raise ValueError(f"--dataset {source!r}: give the dataset's folder, e.g. {name}:/data/{BENCHMARK_DATASETS[name].folder}")
        return load_benchmark_dataset(name, root, split)
    folder = source.removeprefix("imagefolder:")
    if source.startswith("imagefolder:") or Path(folder).is_dir() or _looks_like_a_path(source):
        if not Path(folder).is_dir():
            raise FileNotFoundError(f"dataset folder {folder!r} does not exist")
        check_image_folder(folder)
        try:
            return load_dataset("imagefolder", data_dir=folder, split=split)
        except ValueError as error:  # an unknown split
            raise ValueError(f"dataset folder {folder!r} has no split {split!r} (--split): {error}") from error
    try:
        return load_dataset(source, split=split)
    except Exception as error:  # datasets raises many types (offline, not found, bad split): name what was asked
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(
            f"dataset {source!r} (--dataset) split {split!r} could not be loaded: it is not 'conceptworld' (built in), "
            f"not an existing folder, and the Hub said: {first_line}"
        ) from error


def _looks_like_a_path(source: str) -> bool:
    return source.startswith((".", "/", "~")) or source.count("/") > 1 or "\\" in source


IMAGE_EXTENSIONS = frozenset(extension.lower() for extension in Image.registered_extensions())


def check_image_folder(folder: str | Path) -> None:
    """Refuse an image folder in which some class folder (a folder with no sub-folder) holds no image: the
    ``imagefolder`` builder would drop that class silently and shift every later label id."""
    folder = Path(folder)
    leaves = [path for path in [folder, *folder.rglob("*")] if path.is_dir() and not path.name.startswith(".")
              and not any(child.is_dir() for child in path.iterdir())]  # fmt: skip
    has_images = {leaf: any(p.suffix.lower() in IMAGE_EXTENSIONS for p in leaf.iterdir() if p.is_file()) for leaf in leaves}
    if not any(has_images.values()):
        raise ValueError(f"dataset folder {str(folder)!r} holds no image files ({sorted(IMAGE_EXTENSIONS)[:6]}...)")
    empty = sorted(str(leaf) for leaf, found in has_images.items() if not found and leaf != folder)
    if empty:
        raise ValueError(f"class folder {empty[0]!r} holds no images{f' (and {len(empty) - 1} more)' if len(empty) > 1 else ''}: "
                         "the class would disappear without a word and later label ids shift; add images or remove it")  # fmt: skip


def dataset_class_names(dataset: Dataset, columns: Columns, class_names: list[str] | None = None) -> list[str]:
    """The class names: ``class_names`` if given (checked against the label feature), else the label feature's."""
    feature = dataset.features.get(columns.label)
    names = feature.names if isinstance(feature, ClassLabel) else None
    if class_names is None:
        if names is None:
            raise ValueError(
                f"label column {columns.label!r} is not a ClassLabel, so the class names are unknown: give "
                "`class_names` (--class-names) with one name per label id"
            )
        check_class_names(names, f"label column {columns.label!r}")
        return list(names)
    check_class_names(class_names, "class_names (--class-names)")
    if names is not None and len(names) != len(class_names):
        raise ValueError(
            f"class_names has {len(class_names)} names but label column {columns.label!r} has {len(names)} classes "
            f"({names[:5]}...): give one name per label id, in label order"
        )
    return list(class_names)


# --------------------------------------------------------------------------------------------------- validation
def validate_image_dataset(
    dataset: Dataset, columns: Columns, class_names: list[str], check_images: bool = True
) -> None:
    """Raise a ``ValueError`` naming the problem if ``dataset`` cannot be trained/evaluated on as given."""
    available = list(dataset.column_names)
    for role, column in (("image", columns.image), ("label", columns.label), ("attribute", columns.attribute)):
        if column is not None and column not in available:
            raise ValueError(f"{role} column {column!r} not found; the dataset has columns {available} "
                             f"(choose with --{role}-column)")  # fmt: skip
    if len(dataset) == 0:
        raise ValueError("the dataset is empty")
    labels = np.asarray(dataset[columns.label])
    if labels.dtype.kind not in "iu":
        raise ValueError(f"label column {columns.label!r} must hold integer class ids, got {labels.dtype}")
    if labels.min() < 0 or labels.max() >= len(class_names):
        raise ValueError(
            f"label column {columns.label!r} has ids in [{labels.min()}, {labels.max()}] but there are "
            f"{len(class_names)} class names: expected ids in [0, {len(class_names) - 1}]"
        )
    if check_images:
        _check_images(dataset, columns.image)


def _check_images(dataset: Dataset, column: str) -> None:
    """Open every image once (undecoded bytes or paths, so nothing is kept in memory)."""
    raw = dataset.cast_column(column, ImageFeature(decode=False)) if isinstance(dataset.features[column], ImageFeature) else dataset
    for index, item in enumerate(tqdm(raw[column], desc="checking images", unit="img", leave=False)):
        where = item.get("path") if isinstance(item, dict) else item if isinstance(item, str) else type(item).__name__
        try:
            image = open_image(item)
            image.load()
        except Exception as error:  # PIL raises many types for broken files
            raise ValueError(f"image {index} of column {column!r} ({where}) cannot be read: {error}") from error
        if image.mode not in CONVERTIBLE_MODES:
            raise ValueError(f"image {index} of column {column!r} ({where}) has mode {image.mode!r}, which cannot be "
                             f"converted to RGB without guessing its range; expected one of {sorted(CONVERTIBLE_MODES)}")  # fmt: skip


def open_image(item) -> Image.Image:
    """A dataset's image value (PIL image, ``{"bytes", "path"}`` dict or path) as a PIL image."""
    if isinstance(item, Image.Image):
        return item
    if isinstance(item, dict):
        if item.get("bytes") is not None:
            import io

            return Image.open(io.BytesIO(item["bytes"]))
        return Image.open(item["path"])
    if isinstance(item, str):
        return Image.open(item)
    raise TypeError(f"unsupported image value of type {type(item).__name__}")


# ------------------------------------------------------------------------------------------------- the protocol
def few_shot(dataset: Dataset, shots: int, seed: int, label_column: str = "label") -> Dataset:
    """``shots`` images per class drawn without replacement with ``np.random.default_rng(seed)`` (all of a class's
    images when it has fewer), in class order."""
    if shots < 1:
        raise ValueError(f"shots must be >= 1, got {shots}")
    rng = np.random.default_rng(seed)
    labels = np.asarray(dataset[label_column])
    picked = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        picked.extend(rng.choice(members, size=min(shots, len(members)), replace=False).tolist())
    return dataset.select(picked)


def base_novel_classes(num_classes: int) -> tuple[list[int], list[int]]:
    """Base = the first ``ceil(n / 2)`` label ids, novel = the rest (CoOp / CoCoOp protocol)."""
    cut = math.ceil(num_classes / 2)
    return list(range(cut)), list(range(cut, num_classes))


def select_classes(dataset: Dataset, class_ids: list[int], label_column: str = "label") -> Dataset:
    """The images of ``class_ids``, relabelled ``0..len(class_ids)-1`` in that order."""
    new_id = {old: new for new, old in enumerate(class_ids)}
    kept = dataset.filter(lambda label: label in new_id, input_columns=label_column)
    relabelled = kept.map(lambda label: {label_column: new_id[label]}, input_columns=label_column)
    feature = dataset.features[label_column]
    if isinstance(feature, ClassLabel):
        names = [feature.names[i] for i in class_ids]
        relabelled = relabelled.cast_column(label_column, ClassLabel(names=names))
    return relabelled


# ---------------------------------------------------------------------------------------------------- tensors
def crop_to_box(image: Image.Image, box, size: int) -> Image.Image:
    """``image`` cropped to ``box`` ``(x, y, width, height)`` (pixels) and resized to ``size x size`` (bicubic): the
    bounding-box frame of the part-consistency protocol."""
    x, y, width, height = (float(value) for value in box)
    return image.convert("RGB").crop((x, y, x + width, y + height)).resize((size, size), Image.BICUBIC)


@dataclass
class ImageCollator:
    """A list of dataset rows -> model inputs.

    ``transform`` is any PIL image -> ``(3, S, S)`` callable (:class:`ImageTransform`, or a training augmentation of
    :mod:`.augment`). With ``box_column``, each image is first cropped to that column's ``(x, y, w, h)`` box and
    resized to ``S x S`` (:func:`crop_to_box`; ``S`` = ``transform.image_size``).
    """

    transform: ImageTransform
    columns: Columns = Columns()
    box_column: str | None = None

    def column_names(self) -> list[str]:
        """The dataset columns this collator reads."""
        return self.columns.names() + ([self.box_column] if self.box_column else [])

    def image(self, row: dict) -> Image.Image:
        image = open_image(row[self.columns.image])
        return crop_to_box(image, row[self.box_column], self.transform.image_size) if self.box_column else image

    def __call__(self, rows: list[dict]) -> dict:
        batch = {
            "pixel_values": torch.stack([self.transform(self.image(row)) for row in rows]),
            "labels": torch.tensor([int(row[self.columns.label]) for row in rows]),
        }
        if self.columns.attribute is not None:
            batch["attributes"] = [row[self.columns.attribute] or None for row in rows]
        return batch


def to_device(batch: dict, device: torch.device) -> dict:
    """The tensors of a model-input dict moved to ``device`` (other values, e.g. attribute words, kept)."""
    return {key: value.to(device) if isinstance(value, torch.Tensor) else value for key, value in batch.items()}
