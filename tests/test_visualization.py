"""Concept-map pictures: layout and colouring."""

import numpy as np
import torch

from peft_interp.visualization import PALETTE, concept_map_panel, stack_panels


def test_panel_has_one_tile_per_concept_plus_image_and_overlay():
    image = np.full((20, 20, 3), 255, dtype=np.uint8)
    maps = torch.zeros(4, 5, 5)
    maps[0, :, :2] = 1.0  # concept 0 on the left
    maps[3, :, 2:] = 1.0  # background elsewhere
    panel = concept_map_panel(image, maps, concept_names=["a", "b", "c"], contributions=[0.5, 0.1, -0.2], tile=40)
    assert panel.size == (40 * 5, 40 + 30)
    pixels = np.asarray(panel, dtype=np.float32)
    # overlay tile (second): left part tinted with concept 0's colour over white
    expected_left = 0.45 * 255 + 0.55 * PALETTE[0]
    np.testing.assert_allclose(pixels[20, 40 + 2], expected_left.round(), atol=1)
    # heat map of concept 0 (third tile): strong on the left, plain faded image on the right
    np.testing.assert_allclose(pixels[20, 80 + 2], (0.35 * 255 + 0.65 * PALETTE[0]).round(), atol=1)
    np.testing.assert_allclose(pixels[20, 80 + 38], np.full(3, round(0.35 * 255)), atol=1)


def test_stack_panels_stacks_vertically():
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    panels = [concept_map_panel(image, torch.rand(3, 2, 2), tile=16) for _ in range(3)]
    stacked = stack_panels(panels)
    assert stacked.size == (16 * 4, 3 * (16 + 30))
