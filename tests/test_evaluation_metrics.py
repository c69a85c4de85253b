"""peft_interp.evaluation: the packaged `evaluate` metrics and their input helpers, against hand-computed values."""

import doctest
import functools
import math
import socket
import warnings

import numpy as np
import pytest
import torch

import peft_interp
from peft_interp.evaluation import (
    METRIC_NAMES,
    crop_keypoints,
    load_metric,
    part_mass,
    part_vectors,
    peak_positions,
    read_cub_parts,
    scaled_box_half_size,
    stability_noise,
)


@functools.cache
def metric(name):
    """One loaded metric per name (``compute`` empties it, so it can be reused)."""
    return load_metric(name, keep_in_memory=True)


# ---------------------------------------------------------------------------------------------------------------
# accuracy, base_novel_accuracy


def test_accuracy_counts_matching_predictions():
    assert metric("accuracy").compute(predictions=[0, 1, 2, 2], references=[0, 1, 1, 2]) == {"accuracy": 75.0}


def test_base_novel_accuracy_is_per_split_with_harmonic_mean():
    # base: 3 of 4 right -> 75%; novel: 1 of 2 right -> 50%; HM = 2 * 75 * 50 / 125 = 60%
    result = metric("base_novel_accuracy").compute(
        predictions=[0, 1, 2, 0, 5, 5],
        references=[0, 1, 2, 1, 5, 4],
        splits=["base", "base", "base", "base", "novel", "novel"],
    )
    assert result["base"] == 75.0 and result["novel"] == 50.0
    assert result["hm"] == pytest.approx(60.0)


def test_base_novel_harmonic_mean_is_zero_when_both_are_zero_and_nan_for_a_missing_split():
    both_wrong = metric("base_novel_accuracy").compute(predictions=[1, 1], references=[0, 0], splits=["base", "novel"])
    assert both_wrong == {"base": 0.0, "novel": 0.0, "hm": 0.0}
    base_only = metric("base_novel_accuracy").compute(predictions=[0], references=[0], splits=["base"])
    assert base_only["base"] == 100.0 and math.isnan(base_only["novel"]) and math.isnan(base_only["hm"])
    with pytest.raises(ValueError, match="'base' or 'novel'"):
        metric("base_novel_accuracy").compute(predictions=[0], references=[0], splits=["old"])


# ---------------------------------------------------------------------------------------------------------------
# part_consistency

# 2 classes x 3 images x 2 prototypes x 3 parts.
CONSISTENCY_LABELS = [0, 0, 0, 1, 1, 1]
CONSISTENCY_VISIBLE = [
    [True, True, True],  # class 0: visible counts per part = [3, 2, 1]
    [True, True, False],
    [True, False, False],
    [True, True, True],  # class 1: visible counts per part = [2, 3, 3]
    [True, True, True],
    [False, True, True],
]
CONSISTENCY_VECTORS = [  # image -> prototype -> part
    [[1, 0, 0], [0, 1, 1]],
    [[1, 0, 0], [0, 1, 0]],
    [[0, 0, 0], [0, 0, 0]],
    [[1, 0, 0], [0, 0, 1]],
    [[1, 1, 0], [0, 0, 0]],
    [[0, 1, 0], [0, 0, 1]],
]
# class 0, prototype 0: counts [2, 0, 0] / visible [3, 2, 1] = [0.67, 0, 0]  -> not consistent
# class 0, prototype 1: counts [0, 2, 1] / visible [3, 2, 1] = [0, 1, 1]     -> consistent
# class 1, prototype 0: counts [2, 2, 0] / visible [2, 3, 3] = [1, 0.67, 0]  -> consistent (part 0: 2 of 2 visible)
# class 1, prototype 1: counts [0, 0, 2] / visible [2, 3, 3] = [0, 0, 0.67]  -> not consistent
# consistency = 100 * 2 / 4 = 50; with threshold 0.6 the two 0.67 units pass too -> 100


def test_part_consistency_matches_hand_computation():
    inputs = {"part_vectors": CONSISTENCY_VECTORS, "labels": CONSISTENCY_LABELS, "part_visible": CONSISTENCY_VISIBLE}
    assert metric("part_consistency").compute(**inputs) == {"consistency": 50.0, "num_units": 4}
    assert metric("part_consistency").compute(**inputs, threshold=0.6) == {"consistency": 100.0, "num_units": 4}


@pytest.mark.parametrize(("hits", "expected"), [(4, 100.0), (3, 0.0)])
def test_part_consistency_threshold_itself_counts(hits, expected):
    # one class, 5 images, part 0 visible in all: 4 / 5 = 0.8 >= 0.8 -> consistent; 3 / 5 = 0.6 -> not
    vectors = [[[1, 0]] if i < hits else [[0, 0]] for i in range(5)]
    result = metric("part_consistency").compute(part_vectors=vectors, labels=[7] * 5, part_visible=[[True, True]] * 5)
    assert result == {"consistency": expected, "num_units": 1}


def test_part_consistency_divides_by_visible_images_and_ignores_never_visible_parts():
    # part 0 visible in 1 of 3 images and hit there: 1 / 1 -> consistent, although 1 / 3 images overall.
    # part 1 visible in no image: frequency 0, no division by zero.
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        hit_once = metric("part_consistency").compute(
            part_vectors=[[[1, 0]], [[0, 0]], [[0, 0]]],
            labels=[0, 0, 0],
            part_visible=[[True, False], [False, False], [False, False]],
        )
        never_visible = metric("part_consistency").compute(
            part_vectors=[[[0, 0]]] * 2, labels=[0, 0], part_visible=[[False, False]] * 2
        )
    assert hit_once["consistency"] == 100.0
    assert never_visible["consistency"] == 0.0


def test_part_consistency_rejects_a_hit_on_an_invisible_part():
    with pytest.raises(ValueError, match="not visible"):
        metric("part_consistency").compute(part_vectors=[[[0, 1]]], labels=[0], part_visible=[[True, False]])


def naive_consistency(vectors, labels, visible, threshold=0.8):
    """Independent loop version of the EvalProtoPNet consistency."""
    consistent = []
    for c in sorted(set(labels)):
        images = [i for i, label in enumerate(labels) if label == c]
        for j in range(len(vectors[0])):
            frequencies = []
            for k in range(len(visible[0])):
                visible_count = sum(1 for i in images if visible[i][k])
                hit_count = sum(vectors[i][j][k] for i in images)
                frequencies.append(hit_count / visible_count if visible_count else 0.0)
            consistent.append(any(f >= threshold for f in frequencies))
    return 100.0 * sum(consistent) / len(consistent), len(consistent)


def random_part_inputs(seed, images=40, prototypes=4, parts=5, classes=6):
    generator = np.random.default_rng(seed)
    visible = generator.random((images, parts)) < 0.7
    vectors = (generator.random((images, prototypes, parts)) < 0.8) & visible[:, None, :]
    labels = generator.integers(0, classes, images)
    return vectors.astype(int).tolist(), labels.tolist(), visible.tolist()


@pytest.mark.parametrize("seed", range(5))
def test_part_consistency_matches_naive_loops_on_random_inputs(seed):
    vectors, labels, visible = random_part_inputs(seed)
    for threshold in (0.5, 0.8):
        consistency, units = naive_consistency(vectors, labels, visible, threshold)
        result = metric("part_consistency").compute(
            part_vectors=vectors, labels=labels, part_visible=visible, threshold=threshold
        )
        assert result["num_units"] == units
        assert result["consistency"] == pytest.approx(consistency)


# ---------------------------------------------------------------------------------------------------------------
# part_stability


def test_part_stability_averages_over_class_prototype_units():
    clean = [[[1, 0], [0, 1]], [[1, 0], [0, 1]], [[0, 1], [1, 0]], [[1, 1], [0, 0]]]
    noisy = [
        [[1, 0], [0, 0]],  # class 0: prototype 0 same, prototype 1 changed
        [[1, 0], [0, 1]],  # class 0: both same
        [[1, 1], [1, 0]],  # class 0: prototype 0 changed, prototype 1 same
        [[1, 1], [1, 0]],  # class 1: prototype 0 same, prototype 1 changed
    ]
    # units: (0, 0) 2/3, (0, 1) 2/3, (1, 0) 1, (1, 1) 0 -> 100 * (7/3) / 4 = 58.33 (per image it would be 62.5)
    result = metric("part_stability").compute(part_vectors=clean, noisy_part_vectors=noisy, labels=[0, 0, 0, 1])
    assert result["stability"] == pytest.approx(100 * 7 / 12)
    assert result["num_units"] == 4
    same = metric("part_stability").compute(part_vectors=clean, noisy_part_vectors=clean, labels=[0, 0, 0, 1])
    assert same["stability"] == 100.0


# ---------------------------------------------------------------------------------------------------------------
# concept_alignment and part_mass


def test_concept_alignment_assigns_each_concept_its_best_part():
    mass = [
        [[0.75, 0.25, 0.0], [0.1, 0.2, 0.6], [0.5, 0.5, 0.0]],
        [[0.25, 0.5, 0.0], [0.0, 0.4, 0.2], [0.5, 0.5, 0.0]],
    ]
    # means: concept 0 [0.5, 0.375, 0] -> part 0, 0.5; concept 1 [0.05, 0.3, 0.4] -> part 2, 0.4;
    # concept 2 [0.5, 0.5, 0] -> tie, first part 0, 0.5.  alignment = 100 * (0.5 + 0.4 + 0.5) / 3
    result = metric("concept_alignment").compute(part_mass=mass, part_names=["back", "left eye", "beak"])
    assert result["alignment"] == pytest.approx(100 * 1.4 / 3)
    assert result["per_concept"] == pytest.approx([0.5, 0.4, 0.5])
    assert result["assigned_parts"] == [0, 2, 0]
    assert result["assigned_part_names"] == ["back", "beak", "back"]
    assert "assigned_part_names" not in metric("concept_alignment").compute(part_mass=mass)


def test_part_mass_with_hand_built_masks():
    masks = torch.tensor([[[1, 1], [1, 0]], [[1, 2], [2, 0]]])  # (B=2, H=2, W=2)
    maps = torch.tensor(
        [
            [[[1.0, 1.0], [1.0, 1.0]], [[0.0, 0.0], [0.0, 3.0]]],  # uniform: 3/4 in part 1; all on background
            [[[2.0, -5.0], [0.0, 2.0]], [[0.0, 0.0], [0.0, 0.0]]],  # clamped to [[2, 0], [0, 2]]: 1/2 in part 1; zero
        ]
    )
    expected = torch.tensor([[[0.75, 0.0], [0.0, 0.0]], [[0.5, 0.0], [0.0, 0.0]]])
    assert torch.allclose(part_mass(maps, masks, num_parts=2), expected)


def test_part_mass_upsamples_to_the_mask():
    masks = torch.zeros(1, 4, 4, dtype=torch.long)
    masks[0, :2, :] = 1  # 8 pixels
    masks[0, 2, :3] = 2  # 3 pixels; 5 left on the background
    mass = part_mass(torch.full((1, 1, 1, 1), 2.0), masks, num_parts=3)  # a constant map upsampled to 4 x 4
    assert torch.allclose(mass, torch.tensor([[[8 / 16, 3 / 16, 0.0]]]))


# ---------------------------------------------------------------------------------------------------------------
# part_vectors


def one_hot_map(size, row, column):
    maps = torch.zeros(1, 1, size, size)
    maps[0, 0, row, column] = 1.0
    return maps


def test_part_vectors_box_edges_are_inclusive():
    # 20 x 20 frame (no resize), peak at row 10, column 5, half-size 3: box x in [2, 8], y in [7, 13]
    keypoints = torch.tensor([[[2.0, 7.0], [8.0, 13.0], [1.99, 10.0], [8.01, 10.0], [5.0, 13.01], [5.0, 10.0]]])
    visible = torch.tensor([[True, True, True, True, True, False]])  # the last one is inside but invisible
    vectors = part_vectors(one_hot_map(20, 10, 5), keypoints, visible, frame_size=20, box_half_size=3)
    assert vectors.dtype == torch.long and vectors.shape == (1, 1, 6)
    assert vectors[0, 0].tolist() == [1, 1, 0, 0, 0, 0]


def test_part_vectors_box_is_clipped_to_the_frame():
    keypoints = torch.tensor([[[0.0, 0.0], [-0.5, 1.0], [5.0, 4.0], [20.0, 20.0], [20.5, 18.0]]])
    visible = torch.ones(1, 5, dtype=torch.bool)
    # peak (row 1, column 2): box x in [max(0, -1), 5] = [0, 5], y in [0, 4]; x = -0.5 would be in the unclipped box
    near_origin = part_vectors(one_hot_map(20, 1, 2), keypoints, visible, frame_size=20, box_half_size=3)
    assert near_origin[0, 0].tolist() == [1, 0, 1, 0, 0]
    # peak (row 19, column 18): x in [15, min(20, 21)] = [15, 20], y in [16, 20]; x = 20.5 is cut off by the clip
    near_corner = part_vectors(one_hot_map(20, 19, 18), keypoints, visible, frame_size=20, box_half_size=3)
    assert near_corner[0, 0].tolist() == [0, 0, 0, 1, 0]


def test_peak_is_the_first_maximum_in_row_major_order():
    maps = torch.zeros(2, 1, 16, 16)
    maps[0, 0, 3, 15] = maps[0, 0, 12, 4] = 1.0  # row 3 comes first, although column 4 < 15
    maps[1] = 0.5  # constant map: every pixel ties -> (0, 0)
    rows, columns = peak_positions(maps, frame_size=16)
    assert rows.tolist() == [[3], [0]] and columns.tolist() == [[15], [0]]
    keypoints = torch.tensor([[[15.0, 3.0], [4.0, 12.0]]] * 2)
    vectors = part_vectors(maps, keypoints, torch.ones(2, 2, dtype=torch.bool), frame_size=16, box_half_size=1)
    assert vectors[:, 0].tolist() == [[1, 0], [0, 0]]


def test_part_vectors_upsample_bicubically_to_the_frame():
    # 5 x 5 -> 15 x 15 (x3): pixel (1, 3) centres at ((1 + 0.5) * 3 - 0.5, (3 + 0.5) * 3 - 0.5) = (4, 10)
    rows, columns = peak_positions(one_hot_map(5, 1, 3), frame_size=15)
    assert (rows.item(), columns.item()) == (4, 10)


def test_scaled_box_half_size():
    assert scaled_box_half_size(224) == 36
    assert scaled_box_half_size(448) == 72
    assert scaled_box_half_size(518) == 83  # 36 * 518 / 224 = 83.25


def test_stability_noise_is_clipped_gaussian():
    pixels = torch.zeros(2, 3, 8, 8)
    noisy = stability_noise(pixels, generator=torch.Generator().manual_seed(0))
    expected = (torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.2).clamp(-0.25, 0.25)
    assert torch.equal(noisy, expected)
    assert (noisy.abs() == 0.25).any() and noisy.abs().max() == 0.25  # some draws beyond 1.25 sigma get clipped
    assert torch.equal(stability_noise(pixels + 1, generator=torch.Generator().manual_seed(0)), expected + 1)


# ---------------------------------------------------------------------------------------------------------------
# CUB reader and crop mapping


def write_fake_cub(root):
    (root / "parts").mkdir(parents=True)
    (root / "images.txt").write_text("1 001.Albatross/a.jpg\n2 002.Auklet/b.jpg\n")
    (root / "image_class_labels.txt").write_text("1 1\n2 2\n")
    (root / "bounding_boxes.txt").write_text("1 10.0 20.0 100.0 50.0\n2 0.0 0.0 40.0 40.0\n")
    (root / "train_test_split.txt").write_text("1 1\n2 0\n")
    (root / "parts" / "parts.txt").write_text("1 back\n2 left eye\n3 beak\n")
    (root / "parts" / "part_locs.txt").write_text(
        "1 1 60.0 45.0 1\n1 2 0.0 0.0 0\n1 3 115.0 30.0 1\n2 1 20.0 10.0 1\n2 2 40.0 40.0 1\n2 3 0.0 0.0 0\n"
    )


def test_read_cub_parts(tmp_path):
    write_fake_cub(tmp_path)
    cub = read_cub_parts(tmp_path)
    assert cub.image_ids.tolist() == [1, 2]
    assert cub.image_paths == ["001.Albatross/a.jpg", "002.Auklet/b.jpg"]
    assert cub.labels.tolist() == [0, 1]
    assert cub.bboxes.tolist() == [[10.0, 20.0, 100.0, 50.0], [0.0, 0.0, 40.0, 40.0]]
    assert cub.part_names == ["back", "left eye", "beak"]
    assert cub.keypoints[0].tolist() == [[60.0, 45.0], [0.0, 0.0], [115.0, 30.0]]
    assert cub.visible.tolist() == [[True, False, True], [True, True, False]]
    assert cub.is_training_image.tolist() == [True, False]
    test_images = cub.subset(~cub.is_training_image)
    assert test_images.image_paths == ["002.Auklet/b.jpg"] and test_images.keypoints.shape == (1, 3, 2)


def test_crop_keypoints_by_hand(tmp_path):
    write_fake_cub(tmp_path)
    cub = read_cub_parts(tmp_path)
    keypoints, visible = crop_keypoints(cub.keypoints, cub.visible, cub.bboxes, frame_size=224)
    # image 1, box (10, 20, 100 x 50): back (60, 45) -> ((60 - 10) * 224 / 100, (45 - 20) * 224 / 50) = (112, 112);
    # beak (115, 30) lies right of the box (x > 110) -> invisible
    assert keypoints[0, 0].tolist() == pytest.approx([112.0, 112.0])
    # image 2, box (0, 0, 40 x 40): back (20, 10) -> (112, 56); left eye on the box corner (40, 40) -> (224, 224), kept
    assert keypoints[1, :2].tolist() == [pytest.approx([112.0, 56.0]), pytest.approx([224.0, 224.0])]
    assert visible.tolist() == [[True, False, False], [True, True, False]]


def test_read_cub_parts_names_a_missing_file(tmp_path):
    write_fake_cub(tmp_path)
    (tmp_path / "parts" / "part_locs.txt").unlink()
    with pytest.raises(FileNotFoundError, match="part_locs.txt"):
        read_cub_parts(tmp_path)


# ---------------------------------------------------------------------------------------------------------------
# loading, batching, documentation


def test_load_metric_works_offline(monkeypatch):
    import evaluate

    for variable in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_EVALUATE_OFFLINE"):
        monkeypatch.setenv(variable, "1")
    monkeypatch.setattr(evaluate.config, "HF_EVALUATE_OFFLINE", True)

    def no_network(*args, **kwargs):
        raise OSError("network access in an offline test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    for name in METRIC_NAMES:
        loaded = load_metric(name)  # default settings: cache files on disk
        assert isinstance(loaded, evaluate.EvaluationModule) and loaded.name == name
        assert loaded.description and loaded.citation and loaded.inputs_description and loaded.features


def test_load_metric_rejects_an_unknown_name():
    with pytest.raises(ValueError, match="'consistency'.*valid names: accuracy, base_novel_accuracy, part_consistency"):
        load_metric("consistency")


def batched_inputs(name):
    vectors, labels, visible = random_part_inputs(seed=11, images=12)
    noisy, _, _ = random_part_inputs(seed=12, images=12)
    generator = np.random.default_rng(3)
    predictions, references = generator.integers(0, 3, (2, 12)).tolist()
    return {
        "accuracy": {"predictions": predictions, "references": references},
        "base_novel_accuracy": {"predictions": predictions, "references": references, "splits": ["base", "novel"] * 6},
        "part_consistency": {"part_vectors": vectors, "labels": labels, "part_visible": visible},
        "part_stability": {"part_vectors": vectors, "noisy_part_vectors": noisy, "labels": labels},
        "concept_alignment": {"part_mass": (generator.random((12, 4, 5)) / 5).tolist()},
        "deletion_faithfulness": {
            key: generator.normal(size=(12, 3)).tolist()
            for key in ("concept_logit_drops", "random_logit_drops", "concept_contribution_drops",
                        "random_contribution_drops")  # fmt: skip
        },
    }[name]


COMPUTE_KWARGS = {"deletion_faithfulness": {"fractions": [0.25, 0.5, 1.0]}}  # not per example


@pytest.mark.parametrize("name", METRIC_NAMES)
def test_add_batch_then_compute_equals_compute_on_everything(name):
    inputs = batched_inputs(name)
    whole = metric(name).compute(**inputs, **COMPUTE_KWARGS.get(name, {}))
    for start, stop in [(0, 5), (5, 6), (6, 12)]:
        metric(name).add_batch(**{key: values[start:stop] for key, values in inputs.items()})
    batched = metric(name).compute(**COMPUTE_KWARGS.get(name, {}))
    assert batched.keys() == whole.keys()
    for key, value in whole.items():
        assert batched[key] == (value if isinstance(value, int) else pytest.approx(value, nan_ok=True)), key


@pytest.mark.parametrize("name", METRIC_NAMES)
def test_docstring_examples(name):
    parser, runner = doctest.DocTestParser(), doctest.DocTestRunner()
    runner.run(parser.get_doctest(metric(name).inputs_description, {"peft_interp": peft_interp}, name, None, 0))
    assert runner.tries > 0 and runner.failures == 0
