"""Pictures of concept maps (Pillow only).

:func:`concept_map_panel` draws, for one image, the image itself, the image tinted by each pixel's strongest
concept, and one heat map per concept, labelled with the concept's name and (optionally) its contribution to the
predicted class.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

# Distinct colours for concepts; the background concept is drawn grey.
PALETTE = np.array(
    [[230, 25, 75], [60, 180, 75], [0, 130, 200], [245, 130, 48], [145, 30, 180], [70, 240, 240], [240, 50, 230],
     [210, 245, 60], [250, 190, 212], [0, 128, 128], [170, 110, 40], [128, 0, 0]],
    dtype=np.float32,
)  # fmt: skip
BACKGROUND = np.array([128, 128, 128], dtype=np.float32)


def _upsample(maps: torch.Tensor, size: int) -> np.ndarray:
    """``(K, h, w)`` -> ``(K, size, size)`` bilinear, as numpy."""
    return F.interpolate(maps[None].float(), size=(size, size), mode="bilinear", align_corners=False)[0].numpy()


def concept_map_panel(
    image: np.ndarray,
    maps: torch.Tensor,
    concept_names: Sequence[str] | None = None,
    contributions: Sequence[float] | None = None,
    tile: int = 128,
) -> Image.Image:
    """One row: the image, its concept segmentation overlay, and a heat map per foreground concept.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        maps: ``(N + 1, h, w)`` concept maps, last channel background.
        concept_names: ``N`` labels (default ``concept 0 ...``).
        contributions: ``N`` numbers printed under the heat maps (e.g. share of the predicted logit).
        tile: side of each square tile in pixels.
    """
    num_concepts = maps.shape[0] - 1
    names = list(concept_names) if concept_names is not None else [f"concept {n}" for n in range(num_concepts)]
    base = np.asarray(Image.fromarray(image).convert("RGB").resize((tile, tile), Image.BILINEAR), dtype=np.float32)
    maps_up = _upsample(maps, tile)  # (N + 1, tile, tile)

    colors = np.concatenate([PALETTE[np.arange(num_concepts) % len(PALETTE)], BACKGROUND[None]], axis=0)
    segmentation = colors[maps_up.argmax(0)]  # (tile, tile, 3)
    tiles = [base, 0.45 * base + 0.55 * segmentation]
    for n in range(num_concepts):
        heat = maps_up[n] / max(float(maps_up[n].max()), 1e-8)
        tiles.append(0.35 * base + 0.65 * heat[..., None] * colors[n])

    caption_height = 30
    panel = Image.new("RGB", (tile * len(tiles), tile + caption_height), "white")
    draw = ImageDraw.Draw(panel)
    captions = ["image", "concepts"] + [
        names[n] + ("" if contributions is None else f"\n{contributions[n]:+.2f}") for n in range(num_concepts)
    ]
    for i, (pixels, caption) in enumerate(zip(tiles, captions)):
        panel.paste(Image.fromarray(pixels.clip(0, 255).astype(np.uint8)), (i * tile, 0))
        draw.multiline_text((i * tile + 4, tile + 2), caption, fill=(0, 0, 0), spacing=1)
    return panel


def stack_panels(panels: Sequence[Image.Image]) -> Image.Image:
    """Stack panels of equal width vertically."""
    width = max(panel.width for panel in panels)
    out = Image.new("RGB", (width, sum(panel.height for panel in panels)), "white")
    top = 0
    for panel in panels:
        out.paste(panel, (0, top))
        top += panel.height
    return out
