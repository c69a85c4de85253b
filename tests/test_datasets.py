"""Dataset loaders on tiny folders written in the real layouts, and their errors when a file is missing."""

import json
import shutil

import numpy as np
import pytest
from datasets import ClassLabel

from peft_interp.datasets import (
    BENCHMARK_DATASETS,
    COOP_DATASETS,
    DatasetLayoutError,
    cub_part_protocol,
    dataset_folder,
    dataset_template,
    load_benchmark_dataset,
)
from peft_interp.training.data import load_image_dataset

from .fake_datasets import (
    AIRCRAFT_VARIANTS,
    CUB_CLASSES,
    IMAGENET_NAMES,
    PER_SPLIT,
    SPLIT_FILE_LAYOUTS,
    WNIDS,
    cub_box,
    cub_keypoint,
    write_cub,
    write_everything,
)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return write_everything(tmp_path_factory.mktemp("data"))


def labels_of(dataset):
    return list(dataset["label"])


@pytest.mark.parametrize("key", sorted(SPLIT_FILE_LAYOUTS))
def test_split_file_datasets_read_the_fixed_splits(data_root, key):
    folder, split_file, image_dir, names = SPLIT_FILE_LAYOUTS[key]
    root = dataset_folder(key, data_root)
    assert root == data_root / folder
    entries = json.loads((root / split_file).read_text())
    for split, count in PER_SPLIT.items():
        dataset = load_benchmark_dataset(key, root, split)
        assert dataset.features["label"] == ClassLabel(names=names)  # the split file's names, underscores kept
        assert len(dataset) == count * len(names)
        assert labels_of(dataset) == [label for _, label, _ in entries[split]]
        expected_paths = [str(root / image_dir / path) for path, _, _ in entries[split]]
        raw = dataset.cast_column("image", dataset.features["image"].__class__(decode=False))
        assert [item["path"] for item in raw["image"]] == expected_paths
    image = dataset[0]["image"]
    assert image.size == (24, 20) and np.asarray(image)[..., 0].mean() > 100  # class 0 is red


def test_split_file_errors_name_the_missing_file(tmp_path, data_root):
    root = tmp_path / "oxford_pets"
    shutil.copytree(dataset_folder("oxford_pets", data_root), root)
    (root / "split_zhou_OxfordPets.json").unlink()
    with pytest.raises(DatasetLayoutError, match=r"OxfordPets: the file split_zhou_OxfordPets.json is missing"):
        load_benchmark_dataset("oxford_pets", root, "train")
    shutil.copy(dataset_folder("oxford_pets", data_root) / "split_zhou_OxfordPets.json", root)
    removed = next((root / "images" / "beagle").glob("test_*.jpg"))
    removed.unlink()
    with pytest.raises(DatasetLayoutError, match=rf"image {removed} \(listed in split_zhou_OxfordPets.json\)"):
        load_benchmark_dataset("oxford_pets", root, "test")
    assert len(load_benchmark_dataset("oxford_pets", root, "train")) == 12  # other splits still load
    shutil.rmtree(root / "images")
    with pytest.raises(DatasetLayoutError, match="the folder images is missing"):
        load_benchmark_dataset("oxford_pets", root, "train")
    with pytest.raises(ValueError, match=r"OxfordPets has the splits \['train', 'val', 'test'\], got split='base'"):
        load_benchmark_dataset("oxford_pets", root, "base")
    with pytest.raises(DatasetLayoutError, match="the dataset folder .*nowhere does not exist"):
        load_benchmark_dataset("dtd", tmp_path / "nowhere", "train")


def test_split_file_with_inconsistent_names_is_refused(tmp_path, data_root):
    root = tmp_path / "dtd"
    shutil.copytree(dataset_folder("dtd", data_root), root)
    entries = json.loads((root / "split_zhou_DescribableTextures.json").read_text())
    entries["test"][0][2] = "striped"
    (root / "split_zhou_DescribableTextures.json").write_text(json.dumps(entries))
    with pytest.raises(ValueError, match="gives label 0 two names, 'banded' and 'striped'"):
        load_benchmark_dataset("dtd", root, "train")


def test_fgvc_aircraft_reads_variants_and_split_lists(data_root, tmp_path):
    root = dataset_folder("fgvc_aircraft", data_root)
    for split, count in PER_SPLIT.items():
        dataset = load_benchmark_dataset("fgvc_aircraft", root, split)
        assert dataset.features["label"].names == AIRCRAFT_VARIANTS
        assert labels_of(dataset) == [label for label in range(4) for _ in range(count)]
    copy = tmp_path / "fgvc_aircraft"
    shutil.copytree(root, copy)
    (copy / "images_variant_val.txt").unlink()
    with pytest.raises(DatasetLayoutError, match="the file images_variant_val.txt is missing"):
        load_benchmark_dataset("fgvc_aircraft", copy, "val")
    (copy / "images_variant_test.txt").write_text("1000099 Spitfire\n")
    with pytest.raises(ValueError, match="names the variant 'Spitfire', which is not in variants.txt"):
        load_benchmark_dataset("fgvc_aircraft", copy, "test")


def test_imagenet_uses_val_as_test_and_classnames_txt(data_root, tmp_path):
    root = dataset_folder("imagenet", data_root)
    train = load_benchmark_dataset("imagenet", root, "train")
    test = load_benchmark_dataset("imagenet", root, "test")
    assert train.features["label"].names == IMAGENET_NAMES
    assert labels_of(train) == [label for label in range(6) for _ in range(PER_SPLIT["train"])]
    assert labels_of(test) == [label for label in range(6) for _ in range(PER_SPLIT["test"])]
    assert list(load_benchmark_dataset("imagenet", root, "val")["label"]) == labels_of(test)
    copy = tmp_path / "imagenet"
    shutil.copytree(root, copy)
    shutil.rmtree(copy / "images" / "val" / WNIDS[2])
    with pytest.raises(DatasetLayoutError, match=rf"class folder .*{WNIDS[2]} \(great white shark\) is missing"):
        load_benchmark_dataset("imagenet", copy, "test")
    (copy / "classnames.txt").unlink()
    with pytest.raises(DatasetLayoutError, match="ImageNet: the file classnames.txt is missing"):
        load_benchmark_dataset("imagenet", copy, "train")


@pytest.mark.parametrize("key", ["imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r"])
def test_imagenet_variants(data_root, key):
    dataset = load_benchmark_dataset(key, dataset_folder(key, data_root), "test")
    if key in ("imagenet_a", "imagenet_r"):  # 200-class subsets: label i = i-th wnid folder present, sorted
        assert dataset.features["label"].names == [IMAGENET_NAMES[i] for i in (1, 3, 4)]
        assert labels_of(dataset) == [0, 0, 1, 1, 2, 2]
    else:
        assert dataset.features["label"].names == IMAGENET_NAMES
        assert labels_of(dataset) == [label for label in range(6) for _ in range(2)]
    with pytest.raises(ValueError, match=r"has the splits \['test'\]"):
        load_benchmark_dataset(key, dataset_folder(key, data_root), "train")


def test_imagenetv2_missing_label_folder(tmp_path, data_root):
    root = tmp_path / "imagenetv2"
    shutil.copytree(dataset_folder("imagenetv2", data_root), root)
    shutil.rmtree(root / "imagenetv2-matched-frequency-format-val" / "5")
    with pytest.raises(DatasetLayoutError, match="ImageNetV2: the folder 5 is missing"):
        load_benchmark_dataset("imagenetv2", root, "test")


def test_cub_split_boxes_keypoints_and_part_protocol(tmp_path):
    root = write_cub(tmp_path)
    train, test = (load_benchmark_dataset("cub", root, split) for split in ("train", "test"))
    assert train.features["label"].names == [name.split(".")[1] for name in CUB_CLASSES]
    assert len(train) == len(test) == 6  # odd image ids train, even ones test
    test_ids = [2, 4, 6, 8, 10, 12]
    assert labels_of(test) == [(i - 1) // 4 for i in test_ids]
    assert test[0]["bbox"] == list(cub_box(2))
    keypoints, visible = np.asarray(test[1]["keypoints"]), np.asarray(test[1]["keypoints_visible"])
    assert keypoints.shape == (15, 2) and visible.tolist() == [True] * 14 + [False]
    assert keypoints[0].tolist() == list(cub_keypoint(4, 0)[:2])

    frame = 28
    cropped = cub_part_protocol(test, frame).with_format("numpy")
    for row, image_id in enumerate(test_ids):
        x0, y0, width, height = cub_box(image_id)
        for part in range(15):
            x, y, is_visible = cub_keypoint(image_id, part)
            inside = x0 <= x <= x0 + width and y0 <= y <= y0 + height
            assert bool(cropped[row]["keypoints_visible"][part]) == bool(is_visible and inside)
            if is_visible:
                expected = [(x - x0) * frame / width, (y - y0) * frame / height]
                np.testing.assert_allclose(cropped[row]["keypoints"][part], expected, rtol=1e-6)
        assert cropped[row]["crop_box"].tolist() == list(cub_box(image_id))

    (root / "parts" / "part_locs.txt").unlink()
    with pytest.raises(DatasetLayoutError, match="CUB-200-2011: the file parts/part_locs.txt is missing"):
        load_benchmark_dataset("cub", root, "train")


def test_templates_are_coops_hand_written_ones():
    assert dataset_template("dtd") == "{} texture."
    assert dataset_template("eurosat") == "a centered satellite photo of {}."
    assert dataset_template("food101") == "a photo of {}, a type of food."
    assert dataset_template("ucf101") == "a photo of a person doing {}."
    assert dataset_template("imagenet_sketch") == "a photo of a {}."
    assert len(COOP_DATASETS) == 11 and set(COOP_DATASETS) <= set(BENCHMARK_DATASETS)
    assert all(BENCHMARK_DATASETS[name].template.count("{}") == 1 for name in BENCHMARK_DATASETS)


def test_dataset_flag_names_a_loader(data_root):
    dataset = load_image_dataset(f"ucf101:{dataset_folder('ucf101', data_root)}", "test")
    assert dataset.features["label"].names[0] == "Apply_Eye_Makeup" and len(dataset) == 8
    with pytest.raises(ValueError, match="give the dataset's folder"):
        load_image_dataset("ucf101", "test")
