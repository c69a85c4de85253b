"""ConceptWorld: a procedurally generated image dataset of birds with ground-truth parts and attributes.

Every image shows one stylised bird made of four named parts, `head`, `body`, `wing` and `tail` (part ids 1..4 in
that order; 0 is the background), at a random pose (rotation, scale, position, facing left or right) on a cluttered
background (random background colour and gradient, faint random shapes, pixel noise). Each part has three attributes,
each an ordinary English word that CLIP's tokenizer knows as a single token, and each drawn visibly:

    color    red, green, blue, yellow, orange, purple, black, white       the part's fill colour
    pattern  plain, striped, spotted, dotted                               a texture in a contrasting colour
    shape    head: round, square, pointed   body: round, long              the part's outline
             wing: round, pointed           tail: long, short, pointed

Classes
-------
A class fixes four of these attributes: the head's colour, the body's colour, the wing's pattern and the tail's
shape (8 x 8 x 4 x 3 = 768 classes); the other attributes vary from image to image. Class names put those words in a
fixed order that a text encoder can read for unseen combinations:

    "{head color}-headed {body color}-bodied {wing pattern}-winged {tail shape}-tailed bird"
    e.g. "red-headed blue-bodied striped-winged long-tailed bird"

Every image also gets a caption saying the same in one of a few templates (`CAPTION_TEMPLATES`, drawn per image),
e.g. "a photo of a bird with a red head, a blue body, striped wings and a long tail."

Splits
------
A fixed seeded shuffle of the 768 classes (`ConceptWorldConfig.class_split_seed`) sets aside
`num_downstream_classes` downstream classes, halved into `base` and `novel` (CoOp's base-to-novel protocol); the
remaining classes form the `pretraining` split, so no downstream class ever appears in pretraining. Splits:

    "pretraining"                             images with captions, over the pretraining classes
    "base_train", "base_test"                 the base half of the downstream classes
    "novel_train", "novel_test"               the novel half
    "downstream_train", "downstream_test"     all downstream classes (base first, then novel)

Image `i` of a split shows class `i % num_classes`, so every split is class-balanced, and `shots=k` (k training
images per class) is the same as `num_images=k * num_classes`. Train and test images are drawn from separate random
streams; an image of a downstream class is identical whichever split (`base_*` or `downstream_*`) it is loaded
through, only its `label` (the index in that split's class list) differs.

Rendering styles
----------------
Images come in two styles (`STYLES`): `"photo"`, described above, and `"painting"`: the same bird on a paper-coloured
watercolour wash instead of the cluttered background, its colours diluted 30% toward the paper and its outlines
thicker (the colours stay far apart: every attribute is still visible). Downstream splits are rendered in
`ConceptWorldConfig.downstream_style` (default `"painting"`); of the pretraining split only a small fraction
(`pretraining_style_fraction`, 10%) is. This leaves prompt learning the kind of room it has on real data: a
hand-written "a photo of a {}." is not the best text for the downstream domain, because the backbone saw that domain
rarely (and its captions named it rarely, see `scripts/pretrain.py`), so a learnt context has something to learn;
zero-shot still works because the birds are drawn the same way. Set `downstream_style="photo"` for the original
dataset.

Augmentation
------------
`RandomAffine` (rotation, scaling, translation, horizontal flip) transforms an image, its part masks and its
keypoints with one affine map; keypoints stay on their part's mask, or are marked not visible once they leave the
image (`apply_affine`, `transform_keypoints`).

Determinism
-----------
Each image is drawn from its own `numpy.random.Generator`, seeded with `(seed, stream, class id, index in class)`,
so the same arguments give byte-identical images and annotations (with the same numpy version on the same kind of
machine), independently of any global random state and of which other images are generated. For the few-shot
protocol, vary `seed` for the training set and keep the test set's seed fixed.

Example:

```python
>>> from peft_interp.data import load_conceptworld, class_names
>>> train = load_conceptworld("base_train", shots=4, seed=1)
>>> len(train) == 4 * len(class_names("base_train"))
True
>>> train[0]["caption"]  # doctest: +SKIP
'a photo of a bird with a red head, a blue body, striped wings and a long tail.'
```
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np
from datasets import Array2D, ClassLabel, Dataset, Features, Image, List, Value


# ----------------------------------------------------------------------------------------------------------------
# Vocabulary
# ----------------------------------------------------------------------------------------------------------------

PART_NAMES = ("head", "body", "wing", "tail")
"""Part names; part `PART_NAMES[i]` has id `i + 1` in `part_masks` (0 is the background)."""
PART_IDS = {name: part_id for part_id, name in enumerate(PART_NAMES, start=1)}
ATTRIBUTE_KINDS = ("color", "pattern", "shape")

COLORS = {
    "red": (220, 40, 40),
    "green": (40, 165, 60),
    "blue": (40, 85, 225),
    "yellow": (245, 220, 40),
    "orange": (245, 140, 25),
    "purple": (140, 55, 185),
    "black": (25, 25, 25),
    "white": (245, 245, 245),
}
PATTERNS = ("plain", "striped", "spotted", "dotted")
PART_SHAPES = {
    "head": ("round", "square", "pointed"),
    "body": ("round", "long"),
    "wing": ("round", "pointed"),
    "tail": ("long", "short", "pointed"),
}


def attribute_vocabulary(part: str, kind: str) -> tuple[str, ...]:
    """The words attribute `kind` ("color", "pattern" or "shape") of `part` can take."""
    if kind == "color":
        return tuple(COLORS)
    if kind == "pattern":
        return PATTERNS
    if kind == "shape":
        return PART_SHAPES[part]
    raise ValueError(f"unknown attribute kind {kind!r}, expected one of {ATTRIBUTE_KINDS}")


def all_attribute_words() -> list[str]:
    """Every attribute word of the vocabulary, each once (all are single CLIP tokens)."""
    words = [*COLORS, *PATTERNS, *itertools.chain.from_iterable(PART_SHAPES.values())]
    return list(dict.fromkeys(words))


# ----------------------------------------------------------------------------------------------------------------
# Classes and splits
# ----------------------------------------------------------------------------------------------------------------


class BirdClass(NamedTuple):
    """A ConceptWorld class: the four attributes that define it (the others vary freely between images)."""

    head_color: str
    body_color: str
    wing_pattern: str
    tail_shape: str

    @property
    def name(self) -> str:
        """e.g. "red-headed blue-bodied striped-winged long-tailed bird"."""
        return (
            f"{self.head_color}-headed {self.body_color}-bodied {self.wing_pattern}-winged "
            f"{self.tail_shape}-tailed bird"
        )

    @property
    def description(self) -> str:
        """e.g. "a red head, an orange body, striped wings and a long tail"."""
        return (
            f"{_with_article(self.head_color)} head, {_with_article(self.body_color)} body, "
            f"{self.wing_pattern} wings and {_with_article(self.tail_shape)} tail"
        )

    def fixed_attributes(self) -> dict[tuple[str, str], str]:
        """(part, attribute kind) -> word, for the four attributes the class fixes."""
        return dict(zip(CLASS_ATTRIBUTES, self, strict=True))


def _with_article(word: str) -> str:
    return f"{'an' if word[0] in 'aeiou' else 'a'} {word}"


CLASS_ATTRIBUTES = (("head", "color"), ("body", "color"), ("wing", "pattern"), ("tail", "shape"))
"""The (part, attribute kind) pairs that define a class, in `BirdClass` field order."""

CAPTION_TEMPLATES = (
    "a photo of a bird with {description}.",
    "a bird with {description}.",
    "a photo of {name_with_article}.",
    "{name_with_article}.",
)
STYLES = ("photo", "painting")
SPLITS = ("pretraining", "base_train", "base_test", "novel_train", "novel_test", "downstream_train", "downstream_test")
# The random stream an image is drawn from: pretraining, downstream train and downstream test images never coincide.
_STREAMS = {"pretraining": 0, "train": 1, "test": 2}


@lru_cache(maxsize=1)
def all_classes() -> tuple[BirdClass, ...]:
    """All 768 classes, in a fixed order (their index here is their global class id)."""
    vocabularies = [attribute_vocabulary(part, kind) for part, kind in CLASS_ATTRIBUTES]
    return tuple(BirdClass(*words) for words in itertools.product(*vocabularies))


@dataclass(frozen=True)
class ConceptWorldConfig:
    """Knobs of ConceptWorld's generator. The defaults are the reference dataset.

    Args:
        image_size (`int`, defaults to 64):
            Height and width of the square RGB images, in pixels. Everything else scales with it.
        num_downstream_classes (`int`, defaults to 100):
            Classes held out of pretraining for downstream tasks, half `base`, half `novel`. Must be even and leave
            pretraining classes (at most 766).
        class_split_seed (`int`, defaults to 0):
            Seed of the shuffle that assigns classes to the pretraining / base / novel splits.
        num_pretraining_images (`int`, defaults to 10000):
            Default size of the pretraining split.
        images_per_class (`int`, defaults to 50):
            Default number of images per class of the downstream splits.
        object_scale (`tuple[float, float]`, defaults to `(0.65, 1.0)`):
            Range of the bird's size, as a fraction of the largest size at which it still fits in the image.
        max_rotation (`float`, defaults to 30.0):
            The bird is rotated by an angle drawn uniformly in [-max_rotation, max_rotation] degrees.
        flip_probability (`float`, defaults to 0.5):
            Probability that the bird faces left instead of right.
        part_jitter (`float`, defaults to 0.25):
            Head, wing and tail are turned by up to this many radians (at most 0.25) about their attachment, so that
            the parts' layout varies too.
        color_jitter (`float`, defaults to 12.0):
            Each part's colour is shifted by up to this much per channel (0-255 scale).
        num_clutter_shapes (`tuple[int, int]`, defaults to `(3, 8)`):
            Range (inclusive) of the number of faint ellipses and rectangles drawn on the background.
        clutter_opacity (`tuple[float, float]`, defaults to `(0.1, 0.3)`):
            Opacity range of the clutter shapes.
        noise_std (`float`, defaults to 4.0):
            Standard deviation of the Gaussian pixel noise added to the whole image (0-255 scale).
        downstream_style (`str`, defaults to `"painting"`):
            Rendering style (`STYLES`) of every image of the downstream splits (base, novel, downstream).
        pretraining_style_fraction (`float`, defaults to 0.1):
            Fraction of the pretraining images rendered in `downstream_style` (drawn per image, by its address);
            the others are photos.
    """

    image_size: int = 64
    num_downstream_classes: int = 100
    class_split_seed: int = 0
    num_pretraining_images: int = 10_000
    images_per_class: int = 50
    object_scale: tuple[float, float] = (0.65, 1.0)
    max_rotation: float = 30.0
    flip_probability: float = 0.5
    part_jitter: float = 0.25
    color_jitter: float = 12.0
    num_clutter_shapes: tuple[int, int] = (3, 8)
    clutter_opacity: tuple[float, float] = (0.1, 0.3)
    noise_std: float = 4.0
    downstream_style: str = "painting"
    pretraining_style_fraction: float = 0.1

    def __post_init__(self):
        num_classes = len(all_classes())
        if self.num_downstream_classes % 2 or not 2 <= self.num_downstream_classes <= num_classes - 2:
            raise ValueError(f"num_downstream_classes must be even, in [2, {num_classes - 2}]")
        if self.image_size < 16:
            raise ValueError("image_size must be at least 16 pixels")
        if self.downstream_style not in STYLES:
            raise ValueError(f"downstream_style must be one of {STYLES}, got {self.downstream_style!r}")
        if not 0.0 <= self.pretraining_style_fraction <= 1.0:
            raise ValueError(f"pretraining_style_fraction must be in [0, 1], got {self.pretraining_style_fraction}")
        if not 0.0 <= self.part_jitter <= 0.25:
            raise ValueError("part_jitter must be in [0, 0.25] radians (larger turns could leave the bird's circle)")


@lru_cache(maxsize=8)
def _class_ids_by_split(num_downstream_classes: int, class_split_seed: int) -> dict[str, tuple[int, ...]]:
    """Global class ids of the pretraining, base and novel classes, each sorted."""
    shuffled = np.random.default_rng(class_split_seed).permutation(len(all_classes()))
    num_base = num_downstream_classes // 2
    return {
        "base": tuple(sorted(shuffled[:num_base].tolist())),
        "novel": tuple(sorted(shuffled[num_base:num_downstream_classes].tolist())),
        "pretraining": tuple(sorted(shuffled[num_downstream_classes:].tolist())),
    }


def _split_family_and_stream(split: str) -> tuple[str, str]:
    """Splits a split name into its class family and random stream, e.g. "base_train" -> ("base", "train")."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}, expected one of {SPLITS}")
    if split == "pretraining":
        return "pretraining", "pretraining"
    family, stream = split.split("_")
    return family, stream


def class_ids(split: str, config: ConceptWorldConfig | None = None) -> list[int]:
    """Global class ids (indices into `all_classes()`) of `split`'s classes, in label order."""
    config = config or ConceptWorldConfig()
    ids_by_split = _class_ids_by_split(config.num_downstream_classes, config.class_split_seed)
    family, _ = _split_family_and_stream(split)
    if family == "downstream":
        return [*ids_by_split["base"], *ids_by_split["novel"]]
    return list(ids_by_split[family])


def split_classes(split: str, config: ConceptWorldConfig | None = None) -> list[BirdClass]:
    """`split`'s classes; a sample's `label` indexes this list."""
    every_class = all_classes()
    return [every_class[class_id] for class_id in class_ids(split, config)]


def class_names(split: str, config: ConceptWorldConfig | None = None) -> list[str]:
    """Names of `split`'s classes in label order, e.g. "red-headed blue-bodied striped-winged long-tailed bird"."""
    return [bird_class.name for bird_class in split_classes(split, config)]


# ----------------------------------------------------------------------------------------------------------------
# Geometry of the bird
#
# Parts are drawn in an object frame whose unit is about half the body's length: x points from tail to head (the
# bird faces +x), y points down as in images, and the body's centre is the origin. Each part has its own local frame
# (a, b): its origin at the part's placement point, its a axis along the part's direction. Shapes are tests on
# (a, b) arrays that return the pixels inside the part.
# ----------------------------------------------------------------------------------------------------------------


def _ellipse(a: np.ndarray, b: np.ndarray, radius_a: float, radius_b: float) -> np.ndarray:
    return (a / radius_a) ** 2 + (b / radius_b) ** 2 <= 1.0


def _box(a: np.ndarray, b: np.ndarray, half_a: float, half_b: float) -> np.ndarray:
    return (np.abs(a) <= half_a) & (np.abs(b) <= half_b)


def _diamond(a: np.ndarray, b: np.ndarray, half_a: float, half_b: float) -> np.ndarray:
    return np.abs(a) / half_a + np.abs(b) / half_b <= 1.0


def _convex_polygon(a: np.ndarray, b: np.ndarray, vertices: tuple[tuple[float, float], ...]) -> np.ndarray:
    """Pixels inside the convex polygon whose `vertices` are listed counter-clockwise in the (a, b) frame."""
    inside = np.ones(a.shape, dtype=bool)
    for (a0, b0), (a1, b1) in zip(vertices, vertices[1:] + vertices[:1], strict=True):
        inside &= (a1 - a0) * (b - b0) - (b1 - b0) * (a - a0) >= 0.0
    return inside


class _PartGeometry(NamedTuple):
    inside: Callable[[np.ndarray, np.ndarray], np.ndarray]  # (a, b) -> bool mask
    center: tuple[float, float]  # the part's centre in its local frame (where its keypoint goes)


_PART_GEOMETRY = {
    ("head", "round"): _PartGeometry(lambda a, b: _ellipse(a, b, 0.42, 0.42), (0.0, 0.0)),
    ("head", "square"): _PartGeometry(lambda a, b: _box(a, b, 0.37, 0.37), (0.0, 0.0)),
    ("head", "pointed"): _PartGeometry(lambda a, b: _diamond(a, b, 0.62, 0.40), (0.0, 0.0)),
    ("body", "round"): _PartGeometry(lambda a, b: _ellipse(a, b, 0.85, 0.70), (0.0, 0.0)),
    ("body", "long"): _PartGeometry(lambda a, b: _ellipse(a, b, 1.15, 0.55), (0.0, 0.0)),
    # The wing's a axis points backwards, from its root to its tip.
    ("wing", "round"): _PartGeometry(lambda a, b: _ellipse(a, b, 0.66, 0.34), (0.0, 0.0)),
    ("wing", "pointed"): _PartGeometry(
        lambda a, b: _convex_polygon(a, b, ((-0.42, -0.36), (0.90, 0.0), (-0.42, 0.36))), (0.0, 0.0)
    ),
    # The tail's local origin is its root, under the body; its a axis points backwards, away from the body.
    ("tail", "long"): _PartGeometry(
        lambda a, b: _convex_polygon(a, b, ((0.0, -0.14), (1.40, -0.36), (1.40, 0.36), (0.0, 0.14))), (0.95, 0.0)
    ),
    ("tail", "short"): _PartGeometry(
        lambda a, b: _convex_polygon(a, b, ((0.0, -0.16), (0.75, -0.34), (0.75, 0.34), (0.0, 0.16))), (0.55, 0.0)
    ),
    ("tail", "pointed"): _PartGeometry(
        lambda a, b: _convex_polygon(a, b, ((0.0, -0.32), (1.35, 0.0), (0.0, 0.32))), (0.75, 0.0)
    ),
}

# Where each part sits in the object frame: placement point and direction of its a axis (radians; 0 = forward).
_HEAD_PLACEMENT = ((0.95, -0.62), 0.0)
_WING_PLACEMENT = ((-0.20, -0.18), math.pi + 0.35)  # pointing backwards and up
_TAIL_DIRECTION = math.pi + 0.15  # backwards, slightly up; its root is set by the body's length
_TAIL_ROOT_INSET = 0.15  # how far inside the body's back end the tail's root sits

# The pose rotates and scales the bird about this point, which is the centre of a circle of radius `_OBJECT_RADIUS`
# containing every part in every shape and jitter (tests check the bird never touches the image border).
_OBJECT_PIVOT = (-0.30, -0.15)
_OBJECT_RADIUS = 2.2

_DRAW_ORDER = ("tail", "body", "wing", "head")  # back to front

# Pattern sizes in object units: they scale with the bird.
_STRIPE_PERIOD = 0.32
_SPOT_SPACING, _SPOT_RADIUS = 0.60, 0.19
_DOT_SPACING, _DOT_RADIUS = 0.26, 0.075
_EYE_CENTER, _EYE_RADIUS = (0.12, -0.10), 0.10  # in the head's local frame


@dataclass(frozen=True)
class Pose:
    """Where the bird is drawn: the object-frame point `_OBJECT_PIVOT` lands on pixel (x, y); one object unit is
    `scale` pixels; the bird is turned by `rotation` degrees (clockwise on screen, as y points down) and faces left
    when `flipped`."""

    x: float
    y: float
    scale: float
    rotation: float
    flipped: bool

    def object_to_pixel(self, points: np.ndarray) -> np.ndarray:
        """Maps object-frame points, shape `(..., 2)`, to pixel coordinates (x, y), shape `(..., 2)`."""
        u = points[..., 0] - _OBJECT_PIVOT[0]
        v = points[..., 1] - _OBJECT_PIVOT[1]
        if self.flipped:
            u = -u
        cos, sin = math.cos(math.radians(self.rotation)), math.sin(math.radians(self.rotation))
        x = self.x + self.scale * (cos * u - sin * v)
        y = self.y + self.scale * (sin * u + cos * v)
        return np.stack([x, y], axis=-1)

    def pixel_to_object(self, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Object-frame coordinates (u, v) of pixels at (xs, ys) (float32 arrays of one shape), each of that shape."""
        dx, dy = xs - np.float32(self.x), ys - np.float32(self.y)
        cos, sin = math.cos(math.radians(self.rotation)), math.sin(math.radians(self.rotation))
        u = (cos * dx + sin * dy) / self.scale
        v = (cos * dy - sin * dx) / self.scale
        if self.flipped:
            u = -u
        return u + np.float32(_OBJECT_PIVOT[0]), v + np.float32(_OBJECT_PIVOT[1])


@lru_cache(maxsize=4)
def _pixel_grid(image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """x and y coordinates of the pixel centres, each `(image_size, image_size)` float32 (pixel (i, j) is at x=j,
    y=i)."""
    coordinates = np.arange(image_size, dtype=np.float32)
    xs, ys = np.meshgrid(coordinates, coordinates)
    xs.flags.writeable = ys.flags.writeable = False
    return xs, ys


def _window(center: tuple[float, float], radius: float, image_size: int) -> tuple[slice, slice]:
    """Rows and columns of the pixels within `radius` (per axis) of `center` = (x, y), clipped to the image."""
    x, y = center
    rows = slice(max(0, math.floor(y - radius)), min(image_size, math.ceil(y + radius) + 1))
    columns = slice(max(0, math.floor(x - radius)), min(image_size, math.ceil(x + radius) + 1))
    return rows, columns


def _to_local(u: np.ndarray, v: np.ndarray, origin: tuple[float, float], angle: float) -> tuple[np.ndarray, ...]:
    """Object-frame coordinates -> a part's local (a, b) frame with the given origin and a-axis direction."""
    du, dv = u - np.float32(origin[0]), v - np.float32(origin[1])
    cos, sin = math.cos(angle), math.sin(angle)
    return cos * du + sin * dv, cos * dv - sin * du


def _from_local(point: tuple[float, float], origin: tuple[float, float], angle: float) -> np.ndarray:
    """A point of a part's local frame -> object-frame coordinates, shape `(2,)`."""
    cos, sin = math.cos(angle), math.sin(angle)
    return np.array([origin[0] + cos * point[0] - sin * point[1], origin[1] + sin * point[0] + cos * point[1]])


# ----------------------------------------------------------------------------------------------------------------
# Sampling one image's contents
# ----------------------------------------------------------------------------------------------------------------


def sample_attributes(bird_class: BirdClass, rng: np.random.Generator) -> dict[str, dict[str, str]]:
    """Per-part attributes of one image: the class's four fixed attributes, the others drawn uniformly.

    Returns:
        `{part: {"color": word, "pattern": word, "shape": word}}` for every part of `PART_NAMES`.
    """
    fixed = bird_class.fixed_attributes()
    attributes = {}
    for part in PART_NAMES:
        attributes[part] = {}
        for kind in ATTRIBUTE_KINDS:
            vocabulary = attribute_vocabulary(part, kind)
            drawn = vocabulary[rng.integers(len(vocabulary))]  # always drawn, so the stream does not depend on class
            attributes[part][kind] = fixed.get((part, kind), drawn)
    return attributes


def sample_pose(rng: np.random.Generator, config: ConceptWorldConfig) -> Pose:
    """A random pose at which the whole bird fits inside the image."""
    margin = 1.0  # pixels kept free between the bird's circle and the outermost pixel centres
    largest_scale = ((config.image_size - 1) / 2 - margin) / _OBJECT_RADIUS
    scale = largest_scale * rng.uniform(*config.object_scale)
    reach = _OBJECT_RADIUS * scale + margin  # how far the pivot must stay from the outermost pixel centres
    x, y = rng.uniform(reach, config.image_size - 1 - reach, size=2)
    rotation = rng.uniform(-config.max_rotation, config.max_rotation)
    flipped = bool(rng.random() < config.flip_probability)
    return Pose(x=float(x), y=float(y), scale=float(scale), rotation=float(rotation), flipped=flipped)


def _part_placements(
    attributes: dict[str, dict[str, str]], rng: np.random.Generator, jitter: float
) -> dict[str, tuple[tuple[float, float], float]]:
    """Local-frame origin and a-axis direction of each part in the object frame, with the head, wing and tail turned
    by a random angle in [-jitter, jitter]."""
    turns = rng.uniform(-jitter, jitter, size=3)
    body_half_length = 1.15 if attributes["body"]["shape"] == "long" else 0.85
    tail_root = (-(body_half_length - _TAIL_ROOT_INSET), 0.0)
    return {
        "head": (_HEAD_PLACEMENT[0], _HEAD_PLACEMENT[1] + turns[0]),
        "body": ((0.0, 0.0), 0.0),
        "wing": (_WING_PLACEMENT[0], _WING_PLACEMENT[1] + turns[1]),
        "tail": (tail_root, _TAIL_DIRECTION + turns[2]),
    }


def _pattern_mask(pattern: str, a: np.ndarray, b: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """Where a part's pattern is drawn, for the part's pixels at local coordinates (a, b), shape `(n,)`.

    `phase` (shape `(2,)`, in [0, 1)) shifts the pattern so that it differs from image to image.
    """
    if pattern == "plain":
        return np.zeros(a.shape, dtype=bool)
    if pattern == "striped":  # bands across the part's length
        return (a / _STRIPE_PERIOD + phase[0]) % 1.0 < 0.5
    spacing, radius = (_SPOT_SPACING, _SPOT_RADIUS) if pattern == "spotted" else (_DOT_SPACING, _DOT_RADIUS)
    row = np.floor(b / spacing + phase[1])
    offset_b = b / spacing + phase[1] - row - 0.5
    shifted_a = a / spacing + phase[0] + 0.5 * (row % 2)  # hexagonal grid: every other row shifted by half
    offset_a = shifted_a - np.round(shifted_a)
    return offset_a**2 + offset_b**2 <= (radius / spacing) ** 2


def _contrast_color(color: np.ndarray) -> np.ndarray:
    """Black or white, whichever stands out on `color` (RGB in 0..255, shape `(3,)`)."""
    luminance = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
    return np.full(3, 20.0 if luminance > 110 else 240.0, dtype=np.float32)


# ----------------------------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------------------------


def _draw_background(rng: np.random.Generator, config: ConceptWorldConfig) -> np.ndarray:
    """A random colour with a gentle linear gradient, under faint random ellipses and rectangles (where clutter
    shapes overlap, the later one shows).

    Returns:
        `np.ndarray` of shape `(image_size, image_size, 3)`, float32 in 0..255.
    """
    size = config.image_size
    xs, ys = _pixel_grid(size)
    base = rng.uniform(50, 210, size=3).astype(np.float32)
    gradient = rng.uniform(-40, 40, size=3).astype(np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = (math.cos(angle) * xs + math.sin(angle) * ys) / size  # in about [-1.4, 1.4]

    num_shapes = int(rng.integers(config.num_clutter_shapes[0], config.num_clutter_shapes[1] + 1))
    shape_colors = np.zeros((num_shapes + 1, 3), dtype=np.float32)  # row 0: no clutter
    shape_opacities = np.zeros(num_shapes + 1, dtype=np.float32)
    shape_ids = np.zeros((size, size), dtype=np.uint8)  # which clutter shape covers each pixel
    for shape_id in range(1, num_shapes + 1):
        center = tuple(rng.uniform(0, size, size=2))
        half_sizes = rng.uniform(0.05, 0.3, size=2) * size
        angle = rng.uniform(0, math.pi)
        shape_test = _ellipse if rng.random() < 0.5 else _box
        shape_colors[shape_id] = rng.uniform(0, 255, size=3)
        shape_opacities[shape_id] = rng.uniform(*config.clutter_opacity)
        window = _window(center, math.hypot(*half_sizes), size)
        inside = shape_test(*_to_local(xs[window], ys[window], center, angle), *half_sizes)
        shape_ids[window][inside] = shape_id

    canvas = base + ramp[..., None] * gradient
    canvas += shape_opacities[shape_ids][..., None] * (shape_colors[shape_ids] - canvas)
    return canvas


def _draw_bird(
    canvas: np.ndarray,
    attributes: dict[str, dict[str, str]],
    pose: Pose,
    rng: np.random.Generator,
    config: ConceptWorldConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """Paints the bird on `canvas` (in place) and returns its part mask and keypoints.

    Args:
        canvas: `(H, W, 3)` float32 image in 0..255, painted in place.

    Returns:
        part_masks: `(H, W)` uint8, the id of the visible part at each pixel (0 = background).
        keypoints: `(num_parts, 2)` int32, per part the (x, y) pixel of that part nearest its centre.
    """
    # Only the pixels around the bird are looked at: its circle of radius _OBJECT_RADIUS about the pivot.
    window = _window((pose.x, pose.y), _OBJECT_RADIUS * pose.scale, config.image_size)
    xs, ys = _pixel_grid(config.image_size)
    u, v = pose.pixel_to_object(xs[window], ys[window])
    canvas = canvas[window]  # a view: painting it paints the image
    part_masks = np.zeros((config.image_size, config.image_size), dtype=np.uint8)
    window_masks = part_masks[window]
    placements = _part_placements(attributes, rng, config.part_jitter)
    centers = {}
    for part in _DRAW_ORDER:
        origin, angle = placements[part]
        geometry = _PART_GEOMETRY[part, attributes[part]["shape"]]
        a, b = _to_local(u, v, origin, angle)
        inside = geometry.inside(a, b)
        window_masks[inside] = PART_IDS[part]
        centers[part] = _from_local(geometry.center, origin, angle)

        color = np.asarray(COLORS[attributes[part]["color"]], dtype=np.float32)
        color = np.clip(color + rng.uniform(-config.color_jitter, config.color_jitter, size=3), 0, 255)
        in_pattern = _pattern_mask(attributes[part]["pattern"], a[inside], b[inside], rng.random(2))
        canvas[inside] = np.where(in_pattern[:, None], _contrast_color(color), color.astype(np.float32))
        if part == "head":  # drawn last: its local frame and colour are kept for the eye
            head_a, head_b, head_color = a, b, color

    _draw_outlines(canvas, window_masks)
    eye = _ellipse(head_a - _EYE_CENTER[0], head_b - _EYE_CENTER[1], _EYE_RADIUS, _EYE_RADIUS)
    eye &= window_masks == PART_IDS["head"]
    canvas[eye] = _contrast_color(head_color)

    centers_in_pixels = pose.object_to_pixel(np.stack([centers[part] for part in PART_NAMES]))
    return part_masks, nearest_part_pixels(part_masks, centers_in_pixels)


def _draw_outlines(canvas: np.ndarray, part_masks: np.ndarray) -> None:
    """Darkens (or, on dark parts, lightens) the pixels of each part that touch another part or the background.

    Args:
        canvas: `(h, w, 3)` float32 image (or window of one), painted in place.
        part_masks: `(h, w)` part ids of the same pixels.
    """
    padded = np.pad(part_masks, 1, mode="edge")
    differs = (
        (padded[1:-1, :-2] != part_masks)
        | (padded[1:-1, 2:] != part_masks)
        | (padded[:-2, 1:-1] != part_masks)
        | (padded[2:, 1:-1] != part_masks)
    )
    outline = differs & (part_masks > 0)
    pixels = canvas[outline]
    is_dark = pixels.mean(axis=-1, keepdims=True) < 60
    canvas[outline] = np.where(is_dark, pixels * 0.5 + 90, pixels * 0.5)


_PAPER = np.array([236.0, 224.0, 200.0], dtype=np.float32)
_PAINT_DILUTION = 0.3  # how far a painted part's colour moves toward the paper


def _paint(canvas: np.ndarray, part_masks: np.ndarray, rng: np.random.Generator) -> None:
    """Turns a rendered photo (in place) into the `"painting"` style: a paper-coloured wash with soft blotches as the
    background, part colours diluted toward the paper, and a second, outer ring of dark outline.

    Args:
        canvas: `(H, W, 3)` float32 image in 0..255, painted in place.
        part_masks: `(H, W)` part ids of the same pixels.
    """
    size = canvas.shape[0]
    xs, ys = _pixel_grid(size)
    wash = np.zeros_like(canvas)
    for _ in range(3):  # soft watercolour blotches
        center, radius = rng.uniform(0, size, size=2), rng.uniform(0.2, 0.5) * size
        tint = rng.uniform(-25, 25, size=3).astype(np.float32)
        weight = np.exp(-((xs - center[0]) ** 2 + (ys - center[1]) ** 2) / (2 * radius**2))
        wash += weight[..., None] * tint
    bird = part_masks > 0
    canvas[~bird] = _PAPER + wash[~bird]
    canvas[bird] += _PAINT_DILUTION * (_PAPER - canvas[bird])
    padded = np.pad(bird, 1)
    ring = ~bird & (padded[1:-1, :-2] | padded[1:-1, 2:] | padded[:-2, 1:-1] | padded[2:, 1:-1])
    canvas[ring] = 0.35 * canvas[ring]


def nearest_part_pixels(part_masks: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """For each part, the pixel of that part nearest a target point.

    Args:
        part_masks: `(H, W)` part ids.
        targets: `(num_parts, 2)` float (x, y) target per part, in `PART_NAMES` order.

    Returns:
        `(num_parts, 2)` int32 (x, y) pixel per part, `(-1, -1)` for a part with no pixel.
    """
    keypoints = np.full((len(PART_NAMES), 2), -1, dtype=np.int32)
    for index, part in enumerate(PART_NAMES):
        rows, columns = np.nonzero(part_masks == PART_IDS[part])
        if rows.size == 0:
            continue
        nearest = np.argmin((columns - targets[index, 0]) ** 2 + (rows - targets[index, 1]) ** 2)
        keypoints[index] = columns[nearest], rows[nearest]
    return keypoints


def render_sample(
    bird_class: BirdClass, rng: np.random.Generator, config: ConceptWorldConfig | None = None, style: str = "photo"
) -> dict[str, Any]:
    """Draws one image of `bird_class` in `style` (one of `STYLES`) and its ground truth, using only `rng` for
    randomness (a painting and a photo from the same `rng` show the same bird in the same pose).

    Returns:
        A dict with
        - `image`: `(H, W, 3)` uint8 RGB,
        - `part_masks`: `(H, W)` uint8 part ids (0 = background, `PART_IDS[part]` for each part),
        - `keypoints`: `(4, 2)` int32 (x, y) pixel per part (in `PART_NAMES` order), inside that part's mask,
        - `keypoints_visible`: `(4,)` bool,
        - `attributes`: `{part: {"color", "pattern", "shape"}}` words,
        - `caption`: a sentence describing the bird,
        - `pose`: the `Pose` as a dict,
        - `style`: `style`.
    """
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    config = config or ConceptWorldConfig()
    attributes = sample_attributes(bird_class, rng)
    template = CAPTION_TEMPLATES[rng.integers(len(CAPTION_TEMPLATES))]
    pose = sample_pose(rng, config)
    canvas = _draw_background(rng, config)
    part_masks, keypoints = _draw_bird(canvas, attributes, pose, rng, config)
    if style == "painting":
        _paint(canvas, part_masks, rng)
    noise = rng.standard_normal(canvas.shape, dtype=np.float32) * np.float32(config.noise_std)
    image = np.clip(canvas + noise + 0.5, 0, 255).astype(np.uint8)
    return {
        "image": image,
        "part_masks": part_masks,
        "keypoints": keypoints,
        "keypoints_visible": keypoints[:, 0] >= 0,
        "attributes": attributes,
        "caption": template.format(
            name_with_article=_with_article(bird_class.name), description=bird_class.description
        ),
        "pose": {"x": pose.x, "y": pose.y, "scale": pose.scale, "rotation": pose.rotation, "flipped": pose.flipped},
        "style": style,
    }


def sample_rng(seed: int, stream: str, class_id: int, index: int) -> np.random.Generator:
    """The generator of one image: a function of its address only, never of global random state."""
    return np.random.default_rng([seed, _STREAMS[stream], class_id, index])


def sample_style(seed: int, stream: str, class_id: int, index: int, config: ConceptWorldConfig) -> str:
    """The rendering style of one image, a function of its address: downstream images are all in
    `config.downstream_style`; a pretraining image is with probability `config.pretraining_style_fraction`."""
    if stream != "pretraining":
        return config.downstream_style
    draw = np.random.default_rng([seed, _STREAMS[stream], class_id, index, 1]).random()
    return config.downstream_style if draw < config.pretraining_style_fraction else "photo"


# ----------------------------------------------------------------------------------------------------------------
# datasets.Dataset
# ----------------------------------------------------------------------------------------------------------------


def conceptworld_features(split_class_names: list[str], image_size: int) -> Features:
    """The columns of a ConceptWorld `datasets.Dataset`."""
    attribute_struct = {kind: Value("string") for kind in ATTRIBUTE_KINDS}
    return Features(
        {
            "image": Image(),
            "label": ClassLabel(names=split_class_names),
            "class_name": Value("string"),
            "caption": Value("string"),
            "attributes": {part: dict(attribute_struct) for part in PART_NAMES},
            "keypoints": Array2D(shape=(len(PART_NAMES), 2), dtype="int32"),
            "keypoints_visible": List(Value("bool"), length=len(PART_NAMES)),
            "part_masks": Array2D(shape=(image_size, image_size), dtype="uint8"),
            "pose": {
                "x": Value("float32"),
                "y": Value("float32"),
                "scale": Value("float32"),
                "rotation": Value("float32"),
                "flipped": Value("bool"),
            },
            "style": Value("string"),
        }
    )


def generate_split(
    split: str, num_images: int, seed: int = 0, config: ConceptWorldConfig | None = None
) -> dict[str, list]:
    """Renders the first `num_images` images of `split` as columns (lists of numpy arrays / Python objects).

    Image `i` shows class `i % num_classes` (its `label`) and is the `(i // num_classes)`-th image of that class in
    the split's random stream.
    """
    config = config or ConceptWorldConfig()
    _, stream = _split_family_and_stream(split)
    split_class_ids = class_ids(split, config)
    every_class = all_classes()
    columns = {name: [] for name in conceptworld_features([], config.image_size)}
    for image_index in range(num_images):
        label, index_in_class = image_index % len(split_class_ids), image_index // len(split_class_ids)
        class_id = split_class_ids[label]
        style = sample_style(seed, stream, class_id, index_in_class, config)
        sample = render_sample(every_class[class_id], sample_rng(seed, stream, class_id, index_in_class), config, style)
        sample.update(label=label, class_name=every_class[class_id].name)
        for name, column in columns.items():
            column.append(sample[name])
    return columns


def load_conceptworld(
    split: str,
    num_images: int | None = None,
    seed: int = 0,
    image_size: int | None = None,
    shots: int | None = None,
    config: ConceptWorldConfig | None = None,
) -> Dataset:
    """Generates a ConceptWorld split as an in-memory `datasets.Dataset`.

    Args:
        split (`str`):
            One of `SPLITS`: "pretraining", "base_train", "base_test", "novel_train", "novel_test",
            "downstream_train", "downstream_test".
        num_images (`int`, *optional*):
            Number of images, cycling over the split's classes. Defaults to `config.num_pretraining_images` for
            "pretraining" and `config.images_per_class` per class otherwise. Give either `num_images` or `shots`.
        seed (`int`, defaults to 0):
            Which images: the same seed gives byte-identical images and annotations.
        image_size (`int`, *optional*):
            Overrides `config.image_size`.
        shots (`int`, *optional*):
            Few-shot sampling: exactly `shots` images per class (`num_images = shots * num_classes`). The k-shot set
            of a seed contains its (k-1)-shot set.
        config (`ConceptWorldConfig`, *optional*):
            Generator settings; defaults to `ConceptWorldConfig()`.

    Returns:
        `datasets.Dataset` with the columns of `conceptworld_features`: `image` (PIL image), `label` (`ClassLabel`
        over `class_names(split)`), `class_name`, `caption`, `attributes` (`{part: {color, pattern, shape}}`),
        `keypoints` (`(4, 2)` int (x, y) per part, in `PART_NAMES` order), `keypoints_visible` (4 bools),
        `part_masks` (`(H, W)` uint8 part ids, 0 = background) and `pose`. Use `.with_format("numpy")` to get
        `part_masks` and `keypoints` as arrays.
    """
    config = config or ConceptWorldConfig()
    if image_size is not None and image_size != config.image_size:
        config = replace(config, image_size=image_size)
    names = class_names(split, config)
    if shots is not None and num_images is not None:
        raise ValueError("give either num_images or shots, not both")
    if shots is not None:
        if shots < 1:
            raise ValueError(f"shots must be positive, got {shots}")
        num_images = shots * len(names)
    elif num_images is None:
        num_images = config.num_pretraining_images if split == "pretraining" else config.images_per_class * len(names)
    columns = generate_split(split, num_images, seed=seed, config=config)
    return Dataset.from_dict(columns, features=conceptworld_features(names, config.image_size))


# ----------------------------------------------------------------------------------------------------------------
# Augmentation: one affine transform applied consistently to image, part masks and keypoints
# ----------------------------------------------------------------------------------------------------------------


def affine_matrix(
    image_size: int,
    rotation: float = 0.0,
    scale: float = 1.0,
    translation: tuple[float, float] = (0.0, 0.0),
    flip: bool = False,
) -> np.ndarray:
    """The `(2, 3)` matrix mapping input pixel coordinates (x, y, 1) to output ones: a horizontal flip (if `flip`),
    then a rotation by `rotation` degrees (clockwise on screen) and a scaling by `scale` about the image centre, then
    a shift by `translation` = (dx, dy) pixels."""
    center = (image_size - 1) / 2
    cos, sin = math.cos(math.radians(rotation)), math.sin(math.radians(rotation))
    linear = scale * np.array([[cos, -sin], [sin, cos]]) @ np.diag([-1.0 if flip else 1.0, 1.0])
    offset = np.array([center, center]) + np.asarray(translation, dtype=np.float64) - linear @ [center, center]
    return np.concatenate([linear, offset[:, None]], axis=1)


def _inverse_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a `(2, 3)` affine matrix, as a `(2, 3)` matrix."""
    inverse_linear = np.linalg.inv(matrix[:, :2])
    return np.concatenate([inverse_linear, -inverse_linear @ matrix[:, 2:]], axis=1)


def _source_coordinates(matrix: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """For each output pixel, the input (x, y) it comes from under `matrix`; each of shape `shape`."""
    inverse = _inverse_affine(matrix)
    ys, xs = np.indices(shape, dtype=np.float64)
    source_x = inverse[0, 0] * xs + inverse[0, 1] * ys + inverse[0, 2]
    source_y = inverse[1, 0] * xs + inverse[1, 1] * ys + inverse[1, 2]
    return source_x, source_y


def warp_nearest(array: np.ndarray, matrix: np.ndarray, fill: int = 0) -> np.ndarray:
    """Warps an `(H, W)` or `(H, W, C)` array by `matrix` with nearest-neighbour sampling (for label maps)."""
    source_x, source_y = _source_coordinates(matrix, array.shape[:2])
    columns, rows = np.rint(source_x).astype(np.intp), np.rint(source_y).astype(np.intp)
    height, width = array.shape[:2]
    valid = (columns >= 0) & (columns < width) & (rows >= 0) & (rows < height)
    warped = array[np.clip(rows, 0, height - 1), np.clip(columns, 0, width - 1)]
    warped[~valid] = fill
    return warped


def warp_bilinear(image: np.ndarray, matrix: np.ndarray, fill: int = 0) -> np.ndarray:
    """Warps an `(H, W, C)` uint8 image by `matrix` with bilinear sampling; pixels from outside become `fill`."""
    height, width = image.shape[:2]
    source_x, source_y = _source_coordinates(matrix, (height, width))
    # A one-pixel border of `fill` around the image: samples outside it are clipped onto the border, i.e. `fill`.
    padded = np.pad(image.astype(np.float32), ((1, 1), (1, 1), (0, 0)), constant_values=fill)
    source_x = np.clip(source_x + 1, 0, width + 1)
    source_y = np.clip(source_y + 1, 0, height + 1)
    left, top = (
        np.minimum(np.floor(source_x).astype(np.intp), width),
        np.minimum(np.floor(source_y).astype(np.intp), height),
    )
    weight_x, weight_y = (source_x - left)[..., None], (source_y - top)[..., None]
    upper = padded[top, left] * (1 - weight_x) + padded[top, left + 1] * weight_x
    lower = padded[top + 1, left] * (1 - weight_x) + padded[top + 1, left + 1] * weight_x
    return np.clip(upper * (1 - weight_y) + lower * weight_y + 0.5, 0, 255).astype(np.uint8)


def transform_keypoints(
    keypoints: np.ndarray, visible: np.ndarray, matrix: np.ndarray, warped_part_masks: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Maps keypoints through `matrix`, then snaps each onto the nearest pixel of its part in the warped masks.

    The masks are resampled with nearest neighbours, so the exact image of a keypoint can fall a pixel or so off its
    part near the part's edge; snapping keeps every visible keypoint on its part. A keypoint whose image leaves the
    image, or whose part is no longer in the image, becomes not visible, with coordinates (-1, -1).

    Args:
        keypoints: `(num_parts, 2)` (x, y) per part.
        visible: `(num_parts,)` bool.
        matrix: `(2, 3)` affine matrix (see `affine_matrix`).
        warped_part_masks: `(H, W)` part ids after the same transform.

    Returns:
        `(num_parts, 2)` int32 keypoints and `(num_parts,)` bool visibility.
    """
    height, width = warped_part_masks.shape
    mapped = np.asarray(keypoints, dtype=np.float64) @ matrix[:, :2].T + matrix[:, 2]
    in_image = (np.rint(mapped[:, 0]) >= 0) & (np.rint(mapped[:, 0]) < width)
    in_image &= (np.rint(mapped[:, 1]) >= 0) & (np.rint(mapped[:, 1]) < height)
    snapped = nearest_part_pixels(warped_part_masks, mapped)
    new_visible = np.asarray(visible, dtype=bool) & in_image & (snapped[:, 0] >= 0)
    snapped[~new_visible] = -1
    return snapped, new_visible


def apply_affine(sample: dict[str, Any], matrix: np.ndarray, fill: int = 0) -> dict[str, Any]:
    """Applies one affine transform to a sample's image, part masks and keypoints; other fields pass through.

    Args:
        sample: a ConceptWorld example, with `image` (PIL image or `(H, W, 3)` uint8 array), `part_masks`
            (`(H, W)` array or nested list), `keypoints` (`(4, 2)`) and `keypoints_visible` (`(4,)`).
        matrix: `(2, 3)` affine matrix from input to output pixel coordinates (see `affine_matrix`).
        fill: value of the image pixels that come from outside the input image.

    Returns:
        A new sample; `image` has the input's type (PIL image or array), the rest are numpy arrays.
    """
    image = sample["image"]
    is_pil = not isinstance(image, np.ndarray)
    image_array = np.asarray(image.convert("RGB") if is_pil else image)
    part_masks = warp_nearest(np.asarray(sample["part_masks"], dtype=np.uint8), matrix)
    keypoints, visible = transform_keypoints(
        np.asarray(sample["keypoints"]), np.asarray(sample["keypoints_visible"]), matrix, part_masks
    )
    warped_image = warp_bilinear(image_array, matrix, fill=fill)
    if is_pil:
        from PIL import Image as PILImage

        warped_image = PILImage.fromarray(warped_image)
    return {
        **sample,
        "image": warped_image,
        "part_masks": part_masks,
        "keypoints": keypoints,
        "keypoints_visible": visible,
    }


@dataclass
class RandomAffine:
    """Random rotation, scaling, translation and horizontal flip, applied consistently to a sample's image, part
    masks and keypoints (keypoints stay on their part, or are marked not visible; see `transform_keypoints`).

    Args:
        max_rotation (`float`, defaults to 20.0): rotation drawn in [-max_rotation, max_rotation] degrees.
        scale_range (`tuple[float, float]`, defaults to `(0.85, 1.15)`): scale factor range.
        max_translation (`float`, defaults to 0.1): shift drawn in [-max_translation, max_translation] times the
            image size, per axis.
        flip_probability (`float`, defaults to 0.5): probability of a horizontal flip.
        fill (`int`, defaults to 0): image value of pixels coming from outside the input image.

    Example:

    ```python
    >>> augment = RandomAffine()
    >>> augmented = augment(dataset.with_format("numpy")[0], np.random.default_rng(0))  # doctest: +SKIP
    >>> dataset.set_transform(augment.batch_transform(seed=0))  # doctest: +SKIP
    ```
    """

    max_rotation: float = 20.0
    scale_range: tuple[float, float] = (0.85, 1.15)
    max_translation: float = 0.1
    flip_probability: float = 0.5
    fill: int = 0

    def sample_matrix(self, rng: np.random.Generator, image_size: int) -> np.ndarray:
        """A random `(2, 3)` affine matrix (see `affine_matrix`)."""
        rotation = rng.uniform(-self.max_rotation, self.max_rotation)
        scale = rng.uniform(*self.scale_range)
        translation = rng.uniform(-self.max_translation, self.max_translation, size=2) * image_size
        flip = bool(rng.random() < self.flip_probability)
        return affine_matrix(image_size, rotation, scale, tuple(translation), flip)

    def __call__(self, sample: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        image_size = np.asarray(sample["part_masks"]).shape[0]
        return apply_affine(sample, self.sample_matrix(rng, image_size), fill=self.fill)

    def batch_transform(self, seed: int | None = None) -> Callable[[dict[str, list]], dict[str, list]]:
        """A function for `Dataset.set_transform` / `with_transform` that augments every sample of a batch, drawing
        from its own generator seeded with `seed`. The columns it needs must be in the batch (don't drop them
        with `columns=`)."""
        rng = np.random.default_rng(seed)

        def transform(batch: dict[str, list]) -> dict[str, list]:
            num_samples = len(batch["image"])
            samples = [{name: values[index] for name, values in batch.items()} for index in range(num_samples)]
            augmented = [self(sample, rng) for sample in samples]
            return {name: [sample[name] for sample in augmented] for name in batch}

        return transform
