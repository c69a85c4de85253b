"""Tiny datasets written in the real on-disk layouts (CoOp's DATASETS.md, CUB-200-2011), for offline tests.

Every image is a 24 x 20 JPEG whose colour encodes its class, so a model can learn them in a few steps.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

# (key, folder, split file, image folder, class names as the split file writes them)
SPLIT_FILE_LAYOUTS = {
    "caltech101": ("caltech-101", "split_zhou_Caltech101.json", "101_ObjectCategories", ["face", "leopard", "accordion", "lawn_mower"]),
    "oxford_pets": ("oxford_pets", "split_zhou_OxfordPets.json", "images", ["abyssinian", "american_bulldog", "beagle", "sphynx"]),
    "stanford_cars": ("stanford_cars", "split_zhou_StanfordCars.json", "", ["2000 AM General Hummer SUV", "2012 Acura RL Sedan", "2012 Audi R8 Coupe", "2007 BMW X5 SUV"]),
    "oxford_flowers": ("oxford_flowers", "split_zhou_OxfordFlowers.json", "jpg", ["pink primrose", "globe thistle", "moon orchid", "sunflower"]),
    "food101": ("food-101", "split_zhou_Food101.json", "images", ["apple_pie", "baby_back_ribs", "sushi", "waffles"]),
    "sun397": ("sun397", "split_zhou_SUN397.json", "SUN397", ["abbey", "airplane cabin", "indoor apse", "beach"]),
    "dtd": ("dtd", "split_zhou_DescribableTextures.json", "images", ["banded", "blotchy", "braided", "zigzagged"]),
    "eurosat": ("eurosat", "split_zhou_EuroSAT.json", "2750", ["Annual Crop Land", "Forest", "Highway or Road", "River"]),
    "ucf101": ("ucf101", "split_zhou_UCF101.json", "UCF-101-midframes", ["Apply_Eye_Makeup", "Archery", "Baby_Crawling", "Yo_Yo"]),
}
PER_SPLIT = {"train": 3, "val": 1, "test": 2}  # images per class
WNIDS = ["n01440764", "n01443537", "n01484850", "n01491361", "n01494475", "n01496331"]
IMAGENET_NAMES = ["tench", "goldfish", "great white shark", "tiger shark", "hammerhead shark", "electric ray"]


def write_image(path: Path, label: int, index: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full((20, 24, 3), 30 + 20 * index % 40, dtype=np.uint8)
    pixels[..., label % 3] = 120 + 40 * (label // 3)  # class-coloured
    Image.fromarray(pixels).save(path, format="JPEG", quality=95)


def write_split_file_dataset(data_root: Path, key: str) -> Path:
    """One of the nine split-file datasets; returns its folder."""
    folder, split_file, image_dir, names = SPLIT_FILE_LAYOUTS[key]
    root = Path(data_root) / folder
    entries = {split: [] for split in PER_SPLIT}
    for label, name in enumerate(names):
        class_folder = name.replace(" ", "_")
        for split, count in PER_SPLIT.items():
            for i in range(count):
                relative = f"{class_folder}/{split}_{i:04d}.jpg"
                write_image(root / image_dir / relative, label, i)
                entries[split].append([relative, label, name])
    (root / split_file).write_text(json.dumps(entries))
    return root


AIRCRAFT_VARIANTS = ["707-320", "727-200", "A300B4", "F/A-18"]


def write_fgvc_aircraft(data_root: Path) -> Path:
    root = Path(data_root) / "fgvc_aircraft"
    (root / "images").mkdir(parents=True)
    (root / "variants.txt").write_text("\n".join(AIRCRAFT_VARIANTS) + "\n")
    image_id = 1000000
    for split, count in PER_SPLIT.items():
        lines = []
        for label, variant in enumerate(AIRCRAFT_VARIANTS):
            for i in range(count):
                image_id += 1
                write_image(root / "images" / f"{image_id:07d}.jpg", label, i)
                lines.append(f"{image_id:07d} {variant}")
        (root / f"images_variant_{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def _classnames(root: Path, wnids=WNIDS, names=IMAGENET_NAMES) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "classnames.txt").write_text("".join(f"{w} {n}\n" for w, n in zip(wnids, names)))


def write_imagenet(data_root: Path) -> Path:
    root = Path(data_root) / "imagenet"
    _classnames(root)
    for label, wnid in enumerate(WNIDS):
        for i in range(PER_SPLIT["train"]):
            write_image(root / "images" / "train" / wnid / f"{wnid}_{i}.JPEG", label, i)
        for i in range(PER_SPLIT["test"]):
            write_image(root / "images" / "val" / wnid / f"ILSVRC2012_val_{label:04d}{i}.JPEG", label, i)
    return root


def write_imagenet_variant(data_root: Path, key: str) -> Path:
    """ImageNetV2 (numbered folders, all classes), -Sketch (all wnids), -A / -R (a subset: wnids 1, 3, 4)."""
    folder, image_dir = {"imagenetv2": ("imagenetv2", "imagenetv2-matched-frequency-format-val"),
                         "imagenet_sketch": ("imagenet-sketch", "images"),
                         "imagenet_a": ("imagenet-adversarial", "imagenet-a"),
                         "imagenet_r": ("imagenet-rendition", "imagenet-r")}[key]  # fmt: skip
    root = Path(data_root) / folder
    _classnames(root)
    subset = [1, 3, 4] if key in ("imagenet_a", "imagenet_r") else range(len(WNIDS))
    for label in subset:
        class_folder = str(label) if key == "imagenetv2" else WNIDS[label]
        for i in range(2):
            write_image(root / image_dir / class_folder / f"{i}.jpg", label, i)
    if key in ("imagenet_a", "imagenet_r"):
        (root / image_dir / "README.txt").write_text("not a class")
    return root


CUB_CLASSES = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross"]
CUB_PARTS = ["back", "beak", "belly", "breast", "crown", "forehead", "left eye", "left leg", "left wing", "nape",
             "right eye", "right leg", "right wing", "tail", "throat"]  # fmt: skip


def cub_box(image_id: int) -> tuple[float, float, float, float]:
    return (2.0 + image_id % 3, 1.0 + image_id % 2, 14.0, 12.0)


def cub_keypoint(image_id: int, part: int) -> tuple[float, float, int]:
    """(x, y, visible); part 14 is invisible everywhere, part 13 lies outside every box (x = 23)."""
    if part == 13:
        return 23.0, 5.0, 1
    return float(3 + (part + image_id) % 12), float(2 + part % 10), int(part != 14)


def write_cub(data_root: Path, per_class: int = 4) -> Path:
    """CUB_200_2011 with 3 classes x ``per_class`` images; odd image ids are training images."""
    root = Path(data_root) / "CUB_200_2011"
    (root / "parts").mkdir(parents=True)
    images, labels, split, boxes, locs = [], [], [], [], []
    image_id = 0
    for label, folder in enumerate(CUB_CLASSES):
        for i in range(per_class):
            image_id += 1
            relative = f"{folder}/{folder.split('.')[1]}_{image_id:04d}.jpg"
            write_image(root / "images" / relative, label, i)
            images.append(f"{image_id} {relative}")
            labels.append(f"{image_id} {label + 1}")
            split.append(f"{image_id} {image_id % 2}")
            boxes.append(f"{image_id} " + " ".join(f"{v:.1f}" for v in cub_box(image_id)))
            for part in range(len(CUB_PARTS)):
                x, y, visible = cub_keypoint(image_id, part)
                locs.append(f"{image_id} {part + 1} {x if visible else 0.0:.1f} {y if visible else 0.0:.1f} {visible}")
    for name, lines in (("images.txt", images), ("image_class_labels.txt", labels), ("train_test_split.txt", split),
                        ("bounding_boxes.txt", boxes), ("parts/part_locs.txt", locs),
                        ("classes.txt", [f"{i + 1} {c}" for i, c in enumerate(CUB_CLASSES)]),
                        ("parts/parts.txt", [f"{i + 1} {p}" for i, p in enumerate(CUB_PARTS)])):  # fmt: skip
        (root / name).write_text("\n".join(lines) + "\n")
    return root


def write_everything(data_root: Path) -> Path:
    for key in SPLIT_FILE_LAYOUTS:
        write_split_file_dataset(data_root, key)
    write_fgvc_aircraft(data_root)
    write_imagenet(data_root)
    for key in ("imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r"):
        write_imagenet_variant(data_root, key)
    write_cub(data_root)
    return Path(data_root)
