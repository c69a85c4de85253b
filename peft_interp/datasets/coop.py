"""The 11 prompt-learning datasets and the 4 ImageNet variants, in the layouts documented by the CoOp code base
(Zhou et al., https://github.com/KaiyangZhou/CoOp, ``DATASETS.md``), with its fixed splits.

Nine datasets come with a ``split_zhou_<Name>.json`` file (train / val / test lists of ``[path, label, class
name]``, paths relative to the image folder); FGVCAircraft reads its own ``images_variant_<split>.txt`` files;
ImageNet uses ``images/train`` for training and ``images/val`` as both validation and test set (as CoOp does), with
the class names of ``classnames.txt`` (``<wnid> <name>`` per line, CLIP's ImageNet names). The variants:

* ImageNetV2 — ``imagenetv2-matched-frequency-format-val/<label id>/``, names from ``classnames.txt`` in id order;
* ImageNet-Sketch — ``images/<wnid>/``;  ImageNet-A — ``imagenet-a/<wnid>/``;  ImageNet-R — ``imagenet-r/<wnid>/``
  (200 classes each for -A and -R: label ``i`` is the ``i``-th wnid folder in sorted order, as in CoOp), each with a
  copy of ImageNet's ``classnames.txt``. They only have a ``test`` split.

Class names are kept as the split files write them (e.g. ``"Apply_Eye_Makeup"``): the CLIP prompt core reads
``_`` as a space, as CoOp does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from datasets import Dataset

from .common import (
    DatasetLayoutError,
    check_split,
    image_dataset,
    read_lines,
    read_split_file,
    require,
    require_images,
)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


@dataclass(frozen=True)
class SplitFileDataset:
    """A dataset read through a CoOp ``split_zhou_*.json`` file."""

    title: str  # display name (the CoOp class name)
    folder: str  # the folder under $DATA, as DATASETS.md names it
    split_file: str
    image_dir: str  # relative to the folder; "" for the folder itself

    @property
    def layout(self) -> str:
        return f"  {self.folder}/\n    {self.image_dir or '(images in place)'}/\n    {self.split_file}"

    def load(self, root: str | Path, split: str) -> Dataset:
        root = Path(root)
        check_split(split, self.title)
        if self.image_dir:
            require(root, self.image_dir, self.title, self.layout, kind="folder")
        split_path = require(root, self.split_file, self.title, self.layout)
        paths, labels, names = read_split_file(split_path, root / self.image_dir, split, self.title)
        return image_dataset(paths, labels, names)


SPLIT_FILE_DATASETS = {
    "caltech101": SplitFileDataset("Caltech101", "caltech-101", "split_zhou_Caltech101.json", "101_ObjectCategories"),
    "oxford_pets": SplitFileDataset("OxfordPets", "oxford_pets", "split_zhou_OxfordPets.json", "images"),
    "stanford_cars": SplitFileDataset("StanfordCars", "stanford_cars", "split_zhou_StanfordCars.json", ""),
    "oxford_flowers": SplitFileDataset("OxfordFlowers", "oxford_flowers", "split_zhou_OxfordFlowers.json", "jpg"),
    "food101": SplitFileDataset("Food101", "food-101", "split_zhou_Food101.json", "images"),
    "sun397": SplitFileDataset("SUN397", "sun397", "split_zhou_SUN397.json", "SUN397"),
    "dtd": SplitFileDataset("DescribableTextures", "dtd", "split_zhou_DescribableTextures.json", "images"),
    "eurosat": SplitFileDataset("EuroSAT", "eurosat", "split_zhou_EuroSAT.json", "2750"),
    "ucf101": SplitFileDataset("UCF101", "ucf101", "split_zhou_UCF101.json", "UCF-101-midframes"),
}


# ------------------------------------------------------------------------------------------------ FGVCAircraft
AIRCRAFT_LAYOUT = "  fgvc_aircraft/\n    images/\n    variants.txt\n    images_variant_{train,val,test}.txt"


def load_fgvc_aircraft(root: str | Path, split: str) -> Dataset:
    """FGVCAircraft (``data/`` of fgvc-aircraft-2013b renamed ``fgvc_aircraft``): the 100 variants of
    ``variants.txt`` in file order; ``images_variant_<split>.txt`` lines are ``<image id> <variant name>``."""
    root = Path(root)
    check_split(split, "FGVCAircraft")
    require(root, "images", "FGVCAircraft", AIRCRAFT_LAYOUT, kind="folder")
    names = read_lines(require(root, "variants.txt", "FGVCAircraft", AIRCRAFT_LAYOUT))
    label_of = {name: label for label, name in enumerate(names)}
    listing = f"images_variant_{split}.txt"
    paths, labels = [], []
    for line in read_lines(require(root, listing, "FGVCAircraft", AIRCRAFT_LAYOUT)):
        image_id, _, variant = line.partition(" ")
        if variant not in label_of:
            raise ValueError(f"FGVCAircraft: {listing} names the variant {variant!r}, which is not in variants.txt")
        paths.append(str(root / "images" / f"{image_id}.jpg"))
        labels.append(label_of[variant])
    require_images(paths, "FGVCAircraft", listing)
    return image_dataset(paths, labels, names)


# --------------------------------------------------------------------------------------------- ImageNet family
def read_classnames(root: Path, title: str, layout: str) -> dict[str, str]:
    """``classnames.txt``: ``<wnid> <class name>`` per line -> {wnid: name}, in file order."""
    path = require(root, "classnames.txt", title, layout)
    names = {}
    for line in read_lines(path):
        wnid, _, name = line.partition(" ")
        if not name:
            raise ValueError(f"{title}: {path} lines must be '<wnid> <class name>', got {line!r}")
        names[wnid] = name.strip()
    return names


def _images_in(folder: Path) -> list[str]:
    return sorted(str(path) for path in folder.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES)


def _wnid_folders(image_root: Path, classnames: dict[str, str], title: str, wnids: list[str] | None = None):
    """``(paths, labels, names)``: label ``i`` is the ``i``-th of ``wnids`` (default: the class folders present,
    sorted); every folder must be listed in ``classnames.txt``."""
    present = sorted(path.name for path in image_root.iterdir() if path.is_dir())
    unknown = [wnid for wnid in present if wnid not in classnames]
    if unknown:
        raise ValueError(f"{title}: folders {unknown[:5]} of {image_root} are not in classnames.txt")
    wnids = present if wnids is None else wnids
    if not wnids:
        raise DatasetLayoutError(f"{title}: {image_root} has no class folders")
    paths, labels = [], []
    for label, wnid in enumerate(wnids):
        folder = image_root / wnid
        if not folder.is_dir():
            raise DatasetLayoutError(f"{title}: the class folder {folder} ({classnames[wnid]}) is missing")
        images = _images_in(folder)
        paths += images
        labels += [label] * len(images)
    return paths, labels, [classnames[wnid] for wnid in wnids]


IMAGENET_LAYOUT = "  imagenet/\n    images/\n      train/<wnid>/*.JPEG\n      val/<wnid>/*.JPEG\n    classnames.txt"


def load_imagenet(root: str | Path, split: str) -> Dataset:
    """ImageNet: ``train`` from ``images/train``; ``val`` and ``test`` both from ``images/val`` (CoOp's protocol),
    the 1,000 classes of ``classnames.txt`` (label = position of the wnid in the file, which is sorted)."""
    root = Path(root)
    check_split(split, "ImageNet")
    classnames = read_classnames(root, "ImageNet", IMAGENET_LAYOUT)
    folder = require(root, f"images/{'train' if split == 'train' else 'val'}", "ImageNet", IMAGENET_LAYOUT, "folder")
    paths, labels, names = _wnid_folders(folder, classnames, "ImageNet", wnids=list(classnames))
    return image_dataset(paths, labels, names)


@dataclass(frozen=True)
class ImageNetVariant:
    title: str
    folder: str  # under $DATA
    image_dir: str  # under the folder
    numbered: bool = False  # ImageNetV2: class folders are label ids "0".."999"

    @property
    def layout(self) -> str:
        inner = "<label id>" if self.numbered else "<wnid>"
        return f"  {self.folder}/\n    {self.image_dir}/{inner}/*\n    classnames.txt (a copy of imagenet/classnames.txt)"

    def load(self, root: str | Path, split: str) -> Dataset:
        root = Path(root)
        check_split(split, self.title, ("test",))
        classnames = read_classnames(root, self.title, self.layout)
        image_root = require(root, self.image_dir, self.title, self.layout, kind="folder")
        if not self.numbered:
            return image_dataset(*_wnid_folders(image_root, classnames, self.title))
        names = list(classnames.values())
        paths, labels = [], []
        for label in range(len(names)):
            folder = require(image_root, str(label), self.title, self.layout, kind="folder")
            images = _images_in(folder)
            paths += images
            labels += [label] * len(images)
        return image_dataset(paths, labels, names)


IMAGENET_VARIANTS = {
    "imagenetv2": ImageNetVariant("ImageNetV2", "imagenetv2", "imagenetv2-matched-frequency-format-val", numbered=True),
    "imagenet_sketch": ImageNetVariant("ImageNetSketch", "imagenet-sketch", "images"),
    "imagenet_a": ImageNetVariant("ImageNetA", "imagenet-adversarial", "imagenet-a"),
    "imagenet_r": ImageNetVariant("ImageNetR", "imagenet-rendition", "imagenet-r"),
}

__all__ = ["IMAGENET_VARIANTS", "SPLIT_FILE_DATASETS", "load_fgvc_aircraft", "load_imagenet"]
