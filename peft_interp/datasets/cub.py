"""CUB-200-2011 (Wah et al. 2011) as a ``datasets.Dataset``: images, the 200 classes, the official train/test split,
bounding boxes and the 15 part keypoints; and the bounding-box crop of the part-consistency protocol.

Layout (the ``CUB_200_2011`` folder of the official archive, as the official IVPT code reads it)::

    CUB_200_2011/
      images/<class folder>/<image>.jpg
      images.txt  classes.txt  image_class_labels.txt  train_test_split.txt  bounding_boxes.txt
      parts/parts.txt  parts/part_locs.txt

IVPT trains and measures accuracy on the whole images. Part consistency and stability follow EvalProtoPNet (Huang
et al. 2023): each test image is cropped to its ground-truth box, the crop resized to a square frame and the
keypoints mapped into it (:func:`cub_part_protocol`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from datasets import Dataset, Sequence, Value

from ..evaluation.cub import CUB_FILES, crop_keypoints, read_cub_parts
from .common import check_split, image_dataset, read_lines, require, require_images

CUB_LAYOUT = (
    "  CUB_200_2011/\n    images/<class>/<image>.jpg\n    images.txt  classes.txt  image_class_labels.txt  "
    "train_test_split.txt  bounding_boxes.txt\n    parts/parts.txt  parts/part_locs.txt"
)
BOX_COLUMN = "crop_box"


def cub_class_names(root: Path) -> list[str]:
    """``classes.txt`` (``<id> <nnn>.<Name_With_Underscores>``) -> names without the number, in id order."""
    names = {}
    for line in read_lines(require(root, "classes.txt", "CUB-200-2011", CUB_LAYOUT)):
        class_id, _, folder = line.partition(" ")
        names[int(class_id)] = folder.strip().split(".", 1)[-1]
    return [names[class_id] for class_id in sorted(names)]


def load_cub(root: str | Path, split: str) -> Dataset:
    """CUB-200-2011 ``split`` ("train" / "test", from ``train_test_split.txt``).

    Columns: ``image``, ``label`` (ClassLabel, e.g. ``"Black_footed_Albatross"``), ``bbox`` ``[x, y, w, h]`` and
    ``keypoints`` ``(15, 2)`` ``(x, y)`` in original image pixels, ``keypoints_visible`` ``(15,)``.
    """
    root = Path(root)
    check_split(split, "CUB-200-2011", ("train", "test"))
    require(root, "images", "CUB-200-2011", CUB_LAYOUT, kind="folder")
    for name in (*CUB_FILES, "train_test_split.txt"):
        require(root, name, "CUB-200-2011", CUB_LAYOUT)
    names = cub_class_names(root)
    parts = read_cub_parts(root)
    parts = parts.subset(parts.is_training_image if split == "train" else ~parts.is_training_image)
    paths = [str(root / "images" / path) for path in parts.image_paths]
    require_images(paths, "CUB-200-2011", "images.txt")
    return image_dataset(
        paths,
        parts.labels.tolist(),
        names,
        bbox=(parts.bboxes.tolist(), Sequence(Value("float32"), length=4)),
        keypoints=(parts.keypoints.tolist(), Sequence(Sequence(Value("float32"), length=2))),
        keypoints_visible=(parts.visible.tolist(), Sequence(Value("bool"))),
    )


def cub_part_protocol(dataset: Dataset, frame_size: int) -> Dataset:
    """The part-consistency view of a CUB split: a ``crop_box`` column (the box the collator crops each image to,
    then resizes to ``frame_size x frame_size``) and keypoints mapped into that frame
    (:func:`~peft_interp.evaluation.cub.crop_keypoints`; a keypoint outside its box becomes invisible)."""

    def to_frame(rows: dict) -> dict:
        keypoints, visible = crop_keypoints(
            torch.tensor(rows["keypoints"]), torch.tensor(rows["keypoints_visible"]), torch.tensor(rows["bbox"]),
            frame_size,
        )  # fmt: skip
        return {"keypoints": keypoints.tolist(), "keypoints_visible": visible.tolist(), BOX_COLUMN: rows["bbox"]}

    return dataset.map(to_frame, batched=True, desc="CUB boxes")
