"""Edges of the part metrics: the keypoint box clipped to the frame on both axes, and inputs of the wrong size
refused with a message instead of a wrong score."""

from __future__ import annotations

import pytest
import torch

from peft_interp.evaluation import load_metric, part_vectors


def one_hot_map(size, row, column):
    maps = torch.zeros(1, 1, size, size)
    maps[0, 0, row, column] = 1.0
    return maps


def test_part_vector_box_is_clipped_at_the_top_edge_too():
    """Peak at row 2, column 10, half-size 3: y in [max(0, -1), 5] = [0, 5]; y = -0.5 lies in the unclipped box
    but outside the frame."""
    keypoints = torch.tensor([[[10.0, -0.5], [10.0, 0.0], [10.0, 5.0], [10.0, 5.01]]])
    vectors = part_vectors(one_hot_map(20, 2, 10), keypoints, torch.ones(1, 4, dtype=torch.bool), 20, 3)
    assert vectors[0, 0].tolist() == [0, 1, 1, 0]


def test_concept_alignment_refuses_too_few_or_too_many_part_names():
    mass = [[[0.2, 0.5, 0.3]]]  # one image, one concept, three parts
    metric = load_metric("concept_alignment")
    assert metric.compute(part_mass=mass, part_names=["a", "b", "c"])["assigned_part_names"] == ["b"]
    for names in (["a", "b"], ["a", "b", "c", "d"]):
        with pytest.raises(ValueError, match=f"got {len(names)} part_names for 3 parts"):
            load_metric("concept_alignment").compute(part_mass=mass, part_names=names)


def test_part_stability_refuses_labels_of_another_length():
    vectors = [[[1, 0]], [[0, 1]]]  # (N=2, P=1, K=2)
    for labels in ([0], [0, 1, 1]):  # (evaluate's own length check comes first)
        with pytest.raises(ValueError, match=r"Mismatch in the number of part_vectors \(2\) and labels"):
            load_metric("part_stability").compute(part_vectors=vectors, noisy_part_vectors=vectors, labels=labels)
