"""Pictures of explanations (Pillow only).

* :func:`concept_map_panel` draws, for one image, the image itself, the image tinted by each pixel's strongest
  concept, and one heat map per concept, labelled with the concept's name and (optionally) its contribution to the
  predicted class.
* :func:`concept_overlay` draws the tinted image with a legend (colour swatch and name per concept).
* :func:`concept_score_chart` draws each concept's signed contribution to a class score as horizontal bars.
* :func:`captioned_figure` and :func:`text_figure` put wrapped text lines under an image, or on their own.

Concept ``n`` is drawn in ``PALETTE[n % len(PALETTE)]`` everywhere; the background concept in :data:`BACKGROUND`.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

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


def concept_colors(num_concepts: int) -> np.ndarray:
    """``(N + 1, 3)`` float RGB: the ``N`` foreground concepts' palette colours, then the background grey."""
    return np.concatenate([PALETTE[np.arange(num_concepts) % len(PALETTE)], BACKGROUND[None]], axis=0)


def _concept_names(concept_names: Sequence[str] | None, num_concepts: int) -> list[str]:
    names = list(concept_names) if concept_names is not None else [f"concept {n}" for n in range(num_concepts)]
    if len(names) != num_concepts:
        raise ValueError(f"Got {len(names)} concept names for {num_concepts} concepts.")
    return names


def _square_pixels(image: np.ndarray, tile: int) -> np.ndarray:
    """``(H, W, 3)`` uint8 -> ``(tile, tile, 3)`` float32, bilinear."""
    return np.asarray(Image.fromarray(image).convert("RGB").resize((tile, tile), Image.BILINEAR), dtype=np.float32)


def _tinted(base: np.ndarray, maps_up: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """``(S, S, 3)`` image blended 45/55 with the colour of each pixel's strongest concept.

    ``maps_up``: ``(K, S, S)``; ``colors``: ``(K, 3)``.
    """
    return 0.45 * base + 0.55 * colors[maps_up.argmax(0)]


def _to_image(pixels: np.ndarray) -> Image.Image:
    return Image.fromarray(np.asarray(pixels).clip(0, 255).round().astype(np.uint8))


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
    names = _concept_names(concept_names, num_concepts)
    base = _square_pixels(image, tile)
    maps_up = _upsample(maps, tile)  # (N + 1, tile, tile)

    colors = concept_colors(num_concepts)
    tiles = [base, _tinted(base, maps_up, colors)]
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


# ------------------------------------------------------------------------------------------------------------ text
TEXT_COLOR = (0, 0, 0)
MARGIN = 6  # pixels around text blocks and charts


@cache
def font(size: int = 12) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's built-in font at ``size`` px (Pillow >= 10.1 with FreeType), else its fixed-size bitmap font."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError, AttributeError):
        return ImageFont.load_default()


def line_height(text_font) -> int:
    """Pixels from one text line's top to the next one's."""
    top, bottom = text_font.getbbox("Ag|")[1::2]
    return int(bottom - min(top, 0)) + 3


def wrap_text(text: str, width: int, text_font) -> list[str]:
    """Split ``text`` into lines no wider than ``width`` px, at spaces; words wider than a line are cut."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        current = ""
        for word in paragraph.split(" "):
            candidate = f"{current} {word}" if current else word
            if text_font.getlength(candidate) <= width:
                current = candidate
                continue
            if current:
                lines.append(current)
            current = word
            while text_font.getlength(current) > width and len(current) > 1:
                cut = max(n for n in range(1, len(current)) if text_font.getlength(current[:n]) <= width or n == 1)
                lines.append(current[:cut])
                current = current[cut:]
        lines.append(current)
    return lines


def text_figure(lines: Sequence[str], width: int = 320, font_size: int = 12) -> Image.Image:
    """White panel ``width`` px wide with ``lines`` wrapped to it, one block per line, top to bottom."""
    text_font = font(font_size)
    wrapped = [row for line in lines for row in wrap_text(line, width - 2 * MARGIN, text_font)]
    step = line_height(text_font)
    panel = Image.new("RGB", (width, 2 * MARGIN + step * len(wrapped)), "white")
    draw = ImageDraw.Draw(panel)
    for row, text in enumerate(wrapped):
        draw.text((MARGIN, MARGIN + row * step), text, fill=TEXT_COLOR, font=text_font)
    return panel


def captioned_figure(image: np.ndarray, lines: Sequence[str], tile: int = 224, font_size: int = 12) -> Image.Image:
    """The image scaled to ``tile`` px wide (aspect kept), with ``lines`` wrapped under it.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        lines: text lines, e.g. the readable prompt, top-k class probabilities, predicted attributes.
    """
    picture = Image.fromarray(np.asarray(image)).convert("RGB")
    height = max(1, round(picture.height * tile / picture.width))
    picture = picture.resize((tile, height), Image.BILINEAR)
    return stack_panels([picture, text_figure(lines, width=tile, font_size=font_size)])


# ------------------------------------------------------------------------------------------------ concept figures
def concept_legend(concept_names: Sequence[str], font_size: int = 12, swatch: int = 12) -> Image.Image:
    """One row per concept: a ``swatch`` px square of its colour and its name; the background (grey) last."""
    text_font = font(font_size)
    labels = [*concept_names, "background"]
    colors = concept_colors(len(concept_names))
    step = max(line_height(text_font), swatch + 4)
    width = 2 * MARGIN + swatch + 6 + max(int(np.ceil(text_font.getlength(label))) for label in labels)
    legend = Image.new("RGB", (width, 2 * MARGIN + step * len(labels)), "white")
    draw = ImageDraw.Draw(legend)
    for row, (label, color) in enumerate(zip(labels, colors)):
        top = MARGIN + row * step
        rgb = tuple(int(c) for c in color)
        draw.rectangle([MARGIN, top, MARGIN + swatch - 1, top + swatch - 1], fill=rgb)
        draw.text((MARGIN + swatch + 6, top), label, fill=TEXT_COLOR, font=text_font)
    return legend


def concept_overlay(
    image: np.ndarray, maps: torch.Tensor, concept_names: Sequence[str] | None = None, tile: int = 192
) -> Image.Image:
    """The image tinted by each pixel's strongest concept, with a legend to its right.

    The overlay occupies ``[0, tile) x [0, tile)``; pixel colour ``0.45 * image + 0.55 * colour(argmax concept)``
    with maps upsampled bilinearly; no contours. The legend starts at ``x = tile``.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        maps: ``(N + 1, h, w)`` concept maps, last channel background.
        concept_names: ``N`` labels (default ``concept 0 ...``).
    """
    num_concepts = maps.shape[0] - 1
    names = _concept_names(concept_names, num_concepts)
    tinted = _to_image(_tinted(_square_pixels(image, tile), _upsample(maps, tile), concept_colors(num_concepts)))
    legend = concept_legend(names)
    figure = Image.new("RGB", (tile + legend.width, max(tile, legend.height)), "white")
    figure.paste(tinted, (0, 0))
    figure.paste(legend, (tile, 0))
    return figure


def concept_score_chart(
    concept_scores: Sequence[float] | torch.Tensor,
    concept_names: Sequence[str] | None = None,
    title: str = "",
    width: int = 360,
    font_size: int = 12,
) -> Image.Image:
    """Horizontal bars of signed per-concept scores (e.g. contributions to a class logit) around a zero axis.

    Bar ``n`` is ``PALETTE[n]``, ``|score| * scale`` px long, right of the axis when positive and left when
    negative; its value is printed past its end. The axis is a 1 px black line; bars start next to it.

    Args:
        concept_scores: ``N`` numbers.
        concept_names: ``N`` labels (default ``concept 0 ...``).
        title: wrapped above the chart.
    """
    scores = np.asarray(torch.as_tensor(concept_scores, dtype=torch.float32).detach().cpu(), dtype=np.float64)
    names = _concept_names(concept_names, len(scores))
    text_font = font(font_size)
    step = max(line_height(text_font), 14) + 4
    label_width = max(int(np.ceil(text_font.getlength(name))) for name in names) + MARGIN
    value_texts = [f"{score:+.2f}" for score in scores]
    value_width = max(int(np.ceil(text_font.getlength(text))) for text in value_texts) + 4
    plot_left, plot_right = MARGIN + label_width + value_width, width - MARGIN - value_width
    if plot_right - plot_left < 20:
        raise ValueError(f"width={width} leaves no room for the bars; give a wider chart.")

    low, high = min(0.0, scores.min()), max(0.0, scores.max())
    scale = (plot_right - plot_left - 1) / max(high - low, 1e-12)  # px per unit; 1 px for the axis
    axis = plot_left + round(-low * scale)

    header = text_figure([title], width=width, font_size=font_size) if title else None
    top = header.height if header is not None else MARGIN
    chart = Image.new("RGB", (width, top + step * len(scores) + MARGIN), "white")
    if header is not None:
        chart.paste(header, (0, 0))
    draw = ImageDraw.Draw(chart)
    for row, (name, score, text, color) in enumerate(zip(names, scores, value_texts, concept_colors(len(scores)))):
        y0, y1 = top + row * step + 2, top + (row + 1) * step - 3
        length = round(abs(score) * scale)
        if length > 0:
            x0, x1 = (axis + 1, axis + length) if score > 0 else (axis - length, axis - 1)
            draw.rectangle([x0, y0, x1, y1], fill=tuple(int(c) for c in color))
        text_y = y0 + (y1 - y0 - line_height(text_font) + 3) // 2
        draw.text((MARGIN, text_y), name, fill=TEXT_COLOR, font=text_font)
        if score >= 0:
            draw.text((axis + length + 3, text_y), text, fill=TEXT_COLOR, font=text_font)
        else:
            draw.text((axis - length - 3 - text_font.getlength(text), text_y), text, fill=TEXT_COLOR, font=text_font)
    draw.line([axis, top, axis, top + step * len(scores) - 1], fill=TEXT_COLOR, width=1)
    return chart


# ================================================================================================ matplotlib figures
# One picture per explained image (:func:`explanation_figure`): the image, the concepts drawn on it, one map per
# concept on a fixed colour scale, and the score bars, with real fonts at the size they are shown.

# Okabe & Ito's colour-blind-safe palette (without black), then more saturated colours. The image under the
# concepts is shown in light grey, so no concept colour can be confused with a colour of the image.
CONCEPT_COLORS = (
    "#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#7F3C8D", "#11A579", "#3969AC",
    "#F2B701", "#E73F74",
)  # fmt: skip
WRONG_COLOR = "#C0392B"
RIGHT_COLOR = "#1E8449"
MAX_MAPS_SHOWN = 8  # per-concept maps drawn per image (the ones with the most mass when there are more)


def concept_color(index: int) -> np.ndarray:
    """``(3,)`` float RGB in [0, 1] of concept ``index`` (the same colour in every figure of every page)."""
    hex_code = CONCEPT_COLORS[index % len(CONCEPT_COLORS)]
    return np.array([int(hex_code[i : i + 2], 16) for i in (1, 3, 5)], dtype=np.float32) / 255


def muted_image(image: np.ndarray, size: int) -> np.ndarray:
    """``(H, W, 3)`` uint8 -> ``(size, size, 3)`` float in [0.35, 0.95]: the image as light grey (luma), so that
    concept colours drawn on it stay distinct from the image's own colours."""
    pixels = _square_pixels(image, size) / 255.0
    luma = pixels @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.repeat((0.35 + 0.6 * luma)[..., None], 3, axis=-1)


def concept_regions(maps: torch.Tensor, background: torch.Tensor | None, size: int) -> np.ndarray:
    """``(size, size)`` int: per pixel the concept with the largest (bilinearly upsampled) map value, ``-1`` where the
    background map is larger than every concept.

    Args:
        maps: ``(N, h, w)`` concept maps.
        background: ``(h, w)`` background map, or ``None`` (every pixel belongs to a concept).
    """
    stacked = maps if background is None else torch.cat([maps, background[None]])
    labels = _upsample(stacked.float().cpu(), size).argmax(0)
    if background is not None:
        labels = np.where(labels == maps.shape[0], -1, labels)
    return labels


def overlay_pixels(image: np.ndarray, regions: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """``(S, S, 3)`` float RGB: the muted image, each concept's region filled with its colour at ``alpha``;
    background pixels (``-1``) keep the muted image.

    Args:
        image: ``(H, W, 3)`` uint8.
        regions: ``(S, S)`` int from :func:`concept_regions`.
    """
    pixels = muted_image(image, regions.shape[0])
    for index in np.unique(regions[regions >= 0]):
        inside = regions == index
        pixels[inside] = (1 - alpha) * pixels[inside] + alpha * concept_color(int(index))
    return pixels


def _shown_maps(maps: torch.Tensor, limit: int = MAX_MAPS_SHOWN) -> list[int]:
    """Indices of the maps to draw: all of them, or the ``limit`` with the largest mass, in index order."""
    if maps.shape[0] <= limit:
        return list(range(maps.shape[0]))
    return sorted(maps.flatten(1).sum(1).topk(limit).indices.tolist())


def _wrapped(text: str, width: int) -> str:
    """Each line of ``text`` wrapped at ``width`` characters (long class names in figure titles)."""
    import textwrap

    return "\n".join(textwrap.fill(line, width) for line in text.split("\n"))


def _bar_panel(axis, names: Sequence[str], values: Sequence[float], colors, title: str, unit: str = "") -> None:
    """Horizontal bars, first name on top, each labelled with its value."""
    positions = np.arange(len(values))[::-1]
    axis.barh(positions, values, color=colors, edgecolor="#333333", linewidth=0.5)
    axis.set_yticks(positions, labels=list(names))
    axis.axvline(0, color="#333333", linewidth=0.8)
    span = max(max(abs(v) for v in values), 1e-9)
    for position, value in zip(positions, values):
        axis.text(value + (0.02 if value >= 0 else -0.02) * span, position, f"{value:+.2f}{unit}" if not unit
                  else f"{value:.1f}{unit}", va="center", ha="left" if value >= 0 else "right", fontsize=9)  # fmt: skip
    low, high = min(0.0, *values), max(0.0, *values)
    axis.set_xlim(low - 0.25 * span * (low < 0), high + 0.25 * span)
    axis.set_title(_wrapped(title, 45), fontsize=10, loc="left")
    axis.spines[["top", "right"]].set_visible(False)
    axis.tick_params(labelsize=9)


def explanation_figure(
    image: np.ndarray,
    header: str,
    wrong: bool | None,
    bars: tuple[list[str], list[float], list, str, str],
    maps: torch.Tensor | None = None,
    map_names: Sequence[str] | None = None,
    background: torch.Tensor | None = None,
    notes: Sequence[str] = (),
    size: int = 224,
):
    """One matplotlib figure for one image: the image (title ``header``, red frame and "WRONG" when ``wrong``),
    and, when ``maps`` are given, the concepts drawn on the image (filled regions with outlines and a legend) and
    one map per concept on a shared 0-1 colour scale; then the bars; then ``notes``.

    Args:
        image: ``(H, W, 3)`` uint8.
        header: e.g. ``"true: cat\\npredicted: dog (81.2%)"``.
        wrong: ``True`` marks the image as misclassified, ``None`` when the true class is unknown.
        bars: ``(names, values, colours, title, unit)``; ``unit="%"`` prints values as percentages.
        maps: ``(N, h, w)`` concept maps in [0, 1] (share of each patch given to the concept).
        background: ``(h, w)`` background map.

    Returns:
        A ``matplotlib.figure.Figure`` (close it after saving).
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.patches import Patch

    shown = _shown_maps(maps) if maps is not None else []
    names = _concept_names(map_names, maps.shape[0]) if maps is not None else []
    columns = max(4, len(shown)) if maps is not None else 3
    header = _wrapped(("WRONG: " if wrong else "") + header, 30)
    labels = [_wrapped(name, 36) for name in bars[0]]
    label_lines = sum(label.count("\n") + 1 for label in labels)
    top = max(2.6 + 0.18 * (header.count("\n") + 1), 0.2 * label_lines + 1.0)
    rows = [top] + ([2.3] if maps is not None else []) + ([0.25 * len(notes) + 0.2] if notes else [])
    width = 2.3 * columns if maps is not None else 8.5
    figure = plt.figure(figsize=(width, sum(rows)), dpi=100, layout="constrained")
    grid = figure.add_gridspec(len(rows), columns, height_ratios=rows)
    if maps is None:  # image and bars in sub-figures of their own, so long class names do not squeeze the image
        left, right = figure.add_subfigure(grid[0, :]).subfigures(1, 2, width_ratios=[1, 2])
        picture, bar_axis = left.add_subplot(), right.add_subplot()
    else:
        picture, bar_axis = figure.add_subplot(grid[0, 0]), figure.add_subplot(grid[0, 2:])
    picture.imshow(_square_pixels(image, size) / 255.0)
    picture.set_xticks([])
    picture.set_yticks([])
    color = {True: WRONG_COLOR, False: RIGHT_COLOR, None: "#333333"}[wrong]
    picture.set_title(header, fontsize=9, color=color, loc="left")
    for spine in picture.spines.values():
        spine.set_edgecolor(color)
        spine.set_linewidth(4 if wrong else 1)

    if maps is not None:
        regions = concept_regions(maps, background, size)
        overlay = figure.add_subplot(grid[0, 1])
        overlay.imshow(overlay_pixels(image, regions))
        for index in np.unique(regions[regions >= 0]):
            overlay.contour(regions == index, levels=[0.5], colors=[concept_color(int(index))], linewidths=2)
        overlay.set_xticks([])
        overlay.set_yticks([])
        overlay.set_title("concepts on the image", fontsize=10, loc="left")
        handles = [Patch(facecolor=concept_color(n), edgecolor="#333333", label=names[n]) for n in range(len(names))]
        if background is not None:
            handles.append(Patch(facecolor="#cccccc", edgecolor="#333333", label="background (no fill)"))
        overlay.legend(handles=handles, loc="upper left", bbox_to_anchor=(0, -0.02), fontsize=8, frameon=False,
                       ncols=2 if len(handles) > 4 else 1)  # fmt: skip
        upsampled = _upsample(maps.float().cpu(), size)
        axes = []
        map_grid = grid[1, :].subgridspec(1, columns)
        for column, n in enumerate(shown):
            axis = figure.add_subplot(map_grid[0, column])
            axis.imshow(muted_image(image, size))
            heat = axis.imshow(upsampled[n], cmap="magma", vmin=0, vmax=1, alpha=0.75)
            axis.set_xticks([])
            axis.set_yticks([])
            axis.set_title(f"map: {names[n]}", fontsize=10, color="#111111", loc="left")
            for spine in axis.spines.values():
                spine.set_edgecolor(concept_color(n))
                spine.set_linewidth(3)
            axes.append(axis)
        figure.colorbar(heat, ax=axes, shrink=0.8, label="share of the patch")

    _, values, colors, title, unit = bars
    _bar_panel(bar_axis, labels, values, colors, title, unit)
    if notes:
        text = figure.add_subplot(grid[-1, :])
        text.axis("off")
        text.text(0, 1, "\n".join(notes), va="top", ha="left", fontsize=9, family="monospace")
    return figure


def save_figure(figure, path) -> None:
    """Save a matplotlib figure as PNG and free it."""
    from matplotlib import pyplot as plt

    figure.savefig(path, dpi=100)
    plt.close(figure)


def concept_gallery_figure(
    crops: Sequence[np.ndarray], captions: Sequence[str], concept_name: str, color: np.ndarray, tile: float = 1.6
):
    """One row of image crops where a concept fires most ("this looks like that"), framed in the concept's colour.

    Args:
        crops: ``(h, w, 3)`` float RGB in [0, 1] each.
        captions: one short line per crop (class, peak value).
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(1, len(crops), figsize=(tile * len(crops), tile + 0.7), dpi=100,
                                layout="constrained", squeeze=False)  # fmt: skip
    for axis, crop, caption in zip(axes[0], crops, captions):
        axis.imshow(crop)
        axis.set_xticks([])
        axis.set_yticks([])
        axis.set_xlabel(caption, fontsize=9)
        for spine in axis.spines.values():
            spine.set_edgecolor(color)
            spine.set_linewidth(3)
    figure.suptitle(f"where '{concept_name}' fires most", fontsize=11, x=0.01, ha="left")
    return figure


def class_concept_figure(values: np.ndarray, class_names: Sequence[str], concept_names: Sequence[str], title: str):
    """A class x concept table of mean contributions, coloured on a symmetric blue-red scale, values printed; NaN
    rows (no data) are grey with a dash."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    height = 0.4 * len(class_names) + 1.6
    width = max(1.1 * len(concept_names) + 0.25 * max(len(name) for name in class_names) / 2 + 2.0, 5.0)
    figure, axis = plt.subplots(figsize=(width, height), dpi=100, layout="constrained")
    limit = max(float(np.nanmax(np.abs(values))) if not np.isnan(values).all() else 0.0, 1e-9)
    colormap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="#dddddd")
    image = axis.imshow(np.ma.masked_invalid(values), cmap=colormap, vmin=-limit, vmax=limit, aspect="auto")
    axis.set_xticks(range(len(concept_names)), labels=list(concept_names), fontsize=9, rotation=30, ha="right")
    axis.set_yticks(range(len(class_names)), labels=list(class_names), fontsize=9)
    for (row, column), value in np.ndenumerate(values):
        text = "—" if np.isnan(value) else f"{value:+.2f}"
        axis.text(column, row, text, ha="center", va="center", fontsize=8,
                  color="white" if abs(value) > 0.6 * limit else "black")  # fmt: skip
    axis.set_title(_wrapped(title, 90), fontsize=10, loc="left")
    figure.colorbar(image, ax=axis, label="mean contribution to the logit", fraction=0.04, shrink=0.6)
    return figure
