"""CUB-200-2011 part annotations: reader and keypoint mapping into bounding-box crops.

The EvalProtoPNet protocol (Huang et al. 2023) crops each test image to its ground-truth bounding box, resizes the
crop to 224 x 224 and maps the 15 part keypoints (``parts/part_locs.txt``) into that frame.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import torch

CUB_FILES = (
    "images.txt",
    "image_class_labels.txt",
    "bounding_boxes.txt",
    "parts/parts.txt",
    "parts/part_locs.txt",
)


@dataclass
class CUBParts:
    """CUB images (N, in ``images.txt`` order) and their K part keypoints."""

    image_ids: torch.Tensor  # (N,) long, CUB image ids
    image_paths: list[str]  # N paths relative to images/
    labels: torch.Tensor  # (N,) long, 0-based class index (CUB class id - 1)
    bboxes: torch.Tensor  # (N, 4) float, (x, y, width, height) in original image pixels
    part_names: list[str]  # K names, in parts.txt order
    keypoints: torch.Tensor  # (N, K, 2) float, (x, y) in original image pixels; 0 where not visible / not listed
    visible: torch.Tensor  # (N, K) bool
    is_training_image: torch.Tensor | None = None  # (N,) bool from train_test_split.txt; None without that file

    def subset(self, rows: torch.Tensor) -> CUBParts:
        """The images selected by ``rows`` (a bool mask or indices over N)."""
        indices = torch.arange(len(self.image_paths))[rows].tolist()
        selected = {}
        for field in fields(self):
            value = getattr(self, field.name)
            if field.name == "part_names" or value is None:
                selected[field.name] = value
            elif isinstance(value, list):
                selected[field.name] = [value[i] for i in indices]
            else:
                selected[field.name] = value[indices]
        return CUBParts(**selected)


def _read_rows(root: Path, name: str, columns: int) -> list[list[str]]:
    """Lines of ``root/name`` split on whitespace into at most ``columns`` fields (the last keeps its spaces)."""
    path = root / name
    if not path.is_file():
        raise FileNotFoundError(f"CUB-200-2011 file {name} is missing under {root} (looked for {path})")
    rows = [line.split(maxsplit=columns - 1) for line in path.read_text().splitlines() if line.strip()]
    for row in rows:
        if len(row) != columns:
            raise ValueError(f"{path}: expected {columns} fields per line, got {row}")
    return rows


def _by_image_id(rows: list[list[str]], index_of_id: dict[int, int], name: str) -> dict[int, list[str]]:
    values = {int(row[0]): row[1:] for row in rows}
    missing = set(index_of_id) - set(values)
    if missing:
        raise ValueError(f"{name} has no line for image ids {sorted(missing)[:5]}")
    return values


def read_cub_parts(root: str | Path) -> CUBParts:
    """Read the CUB-200-2011 annotation files under ``root`` (the ``CUB_200_2011`` folder).

    Reads ``images.txt``, ``image_class_labels.txt``, ``bounding_boxes.txt``, ``parts/parts.txt``,
    ``parts/part_locs.txt`` and, when present, ``train_test_split.txt``. Keypoints of parts a line of
    ``part_locs.txt`` marks invisible (or that no line lists) are invisible.
    """
    root = Path(root)
    image_rows = _read_rows(root, "images.txt", 2)
    image_ids = [int(image_id) for image_id, _ in image_rows]
    index_of_id = {image_id: index for index, image_id in enumerate(image_ids)}
    class_ids = _by_image_id(_read_rows(root, "image_class_labels.txt", 2), index_of_id, "image_class_labels.txt")
    boxes = _by_image_id(_read_rows(root, "bounding_boxes.txt", 5), index_of_id, "bounding_boxes.txt")
    part_rows = _read_rows(root, "parts/parts.txt", 2)
    index_of_part = {int(part_id): index for index, (part_id, _) in enumerate(part_rows)}

    keypoints = torch.zeros(len(image_ids), len(part_rows), 2)
    visible = torch.zeros(len(image_ids), len(part_rows), dtype=torch.bool)
    for image_id, part_id, x, y, is_visible in _read_rows(root, "parts/part_locs.txt", 5):
        row, part = index_of_id[int(image_id)], index_of_part[int(part_id)]
        keypoints[row, part] = torch.tensor([float(x), float(y)])
        visible[row, part] = bool(int(float(is_visible)))

    is_training_image = None
    if (root / "train_test_split.txt").is_file():
        split = _by_image_id(_read_rows(root, "train_test_split.txt", 2), index_of_id, "train_test_split.txt")
        is_training_image = torch.tensor([split[i][0] == "1" for i in image_ids])
    return CUBParts(
        image_ids=torch.tensor(image_ids),
        image_paths=[path for _, path in image_rows],
        labels=torch.tensor([int(class_ids[i][0]) - 1 for i in image_ids]),
        bboxes=torch.tensor([[float(v) for v in boxes[i]] for i in image_ids]).reshape(-1, 4),
        part_names=[name.strip() for _, name in part_rows],
        keypoints=keypoints,
        visible=visible,
        is_training_image=is_training_image,
    )


def crop_keypoints(
    keypoints: torch.Tensor, visible: torch.Tensor, bbox: torch.Tensor, frame_size: int = 224
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keypoints in the bounding-box crop resized to ``frame_size x frame_size``, and their visibility.

    Args:
        keypoints: ``(..., K, 2)`` (x, y) in original image pixels.
        visible: ``(..., K)`` bool.
        bbox: ``(..., 4)`` (x, y, width, height) in original image pixels.

    Returns ``((..., K, 2) float, (..., K) bool)``: ``x' = (x - box_x) * frame_size / width`` and
    ``y' = (y - box_y) * frame_size / height``; a keypoint stays visible only if it lies in the closed box
    ``box_x <= x <= box_x + width``, ``box_y <= y <= box_y + height``.
    """
    bbox = bbox.to(torch.float64)[..., None, :]  # (..., 1, 4)
    origin, size = bbox[..., :2], bbox[..., 2:]  # (..., 1, 2) each
    points = keypoints.to(torch.float64)
    in_box = ((points >= origin) & (points <= origin + size)).all(dim=-1)  # (..., K)
    cropped = (points - origin) * frame_size / size
    return cropped.to(keypoints.dtype if keypoints.is_floating_point() else torch.float32), visible.bool() & in_box
