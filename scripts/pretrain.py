"""Pretraining of the tiny ConceptWorld backbones shipped in `peft_interp/checkpoints/`.

No pretrained weights can be downloaded in an offline test environment, so the package ships two small backbones
trained from scratch, on a CPU, on the ConceptWorld **pretraining split only** (668 classes; no base or novel class
is ever seen, and no class label is used):

* `conceptworld-clip`: a `transformers.CLIPModel` (ViT image tower and text tower, OpenAI CLIP's real tokenizer and
  49,408-token vocabulary) trained with CLIP's loss: symmetric InfoNCE over the image-caption pairs of a batch,
  with a learnable temperature (clamped at 100, as in CLIP). Each image's caption is drawn again every epoch from
  its twelve part attributes (`sample_caption`), in varied templates ("a photo of a red-headed blue-bodied ...
  bird.", "a picture of a bird with a round red head, striped wings and ...", partial descriptions, ...), so that
  the text tower learns what each attribute word means on its own and can read class names it never saw, as CLIP
  does. Batches are made of hard-negative groups (`hard_negative_batches`): an anchor image and three images whose
  class-defining attributes differ from the anchor's in exactly one (another head colour, another wing pattern,
  ...), so their captions differ by one attribute and the contrastive loss cannot be solved by reading the body
  colour alone (with random batches of 64, the earlier 3-epoch CLIP read the body colour at 79% but the head colour
  at 27% and the wing pattern at chance). On top of CLIP's loss, the image tower's patch tokens get the same
  supervised heads as the DINOv2's (`patch_supervision_loss`: each patch's part and that part's colour, pattern and
  shape, `clip_patch_loss_weight`): with contrastive losses alone the 64-px image tower encoded the wing pattern and
  the tail shape too weakly for any caption to read them (linear probes of its image embedding: 52% and 56%, zero-shot
  at chance). 10% of the images are paintings (ConceptWorld's downstream style), and
  only a quarter of those are captioned as such ("a painting of ..."), as on the web, where captions seldom say how
  a picture was made. Like CLIP, it is then a zero-shot classifier from class names alone. Trained from scratch, both
  towers start out mapping every input to nearly the same embedding, and the text tower, which learns much faster
  than the image tower, then collapses onto a constant embedding, a stationary point of the loss; so the text tower
  is frozen for its first `clip_text_freeze_steps` steps while the image tower learns to match its (random but
  content-dependent) text embeddings, then trained with its own short warm-up.
* `conceptworld-dinov2`: a `transformers.Dinov2WithRegistersModel` trained without any downstream label, by
  masked image modelling, SimMIM-style (Xie et al., 2022), with auxiliary supervised losses on the pretraining
  split's annotations, given to the patch tokens and the CLS token alike: in half of the images of a batch, half of
  the patches, in 2 x 2 blocks, are replaced by the model's mask token and a linear head predicts their pixels
  (normalised per patch, as in MAE) from the output tokens; linear heads predict from every output patch token
  (masked ones included) which part of the bird the patch shows and that part's colour, pattern and shape; and
  linear heads predict the image's twelve part attributes from the CLS token and, with the same heads, from the mean
  of the patch tokens (`mean_patch_attribute_loss_weight`). Why supervised and symmetric: the real
  DINOv2's patch tokens are semantic because of its self-distillation objectives (DINO on the CLS, iBOT on masked
  patches) run at a scale far beyond a few CPU minutes; at this budget masked modelling alone neither beat a randomly
  initialised ViT on the part probe nor gave usable image features, and supervising the CLS token alone (the
  earlier checkpoint) left the patch tokens without the attributes (16-shot linear probe: 57% on the CLS, 36% on the
  mean of the patch tokens), which decided the ranking of the visual prompt methods by where they read the
  backbone; per-patch supervision without the mean-patch loss still left the mean of the patch tokens 14 points
  below the CLS (45.6% vs 59.4%), with it the two read the same (67.8% vs 67.4%). The dense supervision of the pretraining split stands in for what the real DINOv2 learns by itself.
  Downstream results that rely on the backbone seeing parts (part discovery, concept maps) are therefore easier
  than with a purely self-supervised backbone; `benchmarks/conceptworld_baselines.py` reports the probes next to a
  randomly initialised control.

Both models see the same images, rendered once. Images are normalised with the mean and standard deviation of the
real models (OpenAI CLIP's, ImageNet's for DINOv2), which the image processors saved next to the weights repeat.
Everything is seeded (`PretrainingSettings.seed`): the images through ConceptWorld's own seeding, captions, masks,
shuffling and initialisation through generators derived from it.

Run it with `python examples/pretrain_backbones.py`, which saves both models in the Hugging Face format.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from transformers import CLIPConfig, CLIPModel, Dinov2WithRegistersConfig, Dinov2WithRegistersModel

from peft_interp.data.conceptworld import (
    ATTRIBUTE_KINDS,
    CLASS_ATTRIBUTES,
    COLORS,
    PART_NAMES,
    PART_SHAPES,
    PATTERNS,
    ConceptWorldConfig,
    attribute_vocabulary,
    generate_split,
)
from peft_interp.data.preprocessing import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD
from peft_interp.data.preprocessing import normalize as normalize_uint8
from peft_interp.data.tokenizer import CLIP_CONTEXT_LENGTH, load_clip_tokenizer


IMAGE_SIZE = 64
PATCH_SIZE = 8

CLIP_MEAN_STD = (CLIP_MEAN, CLIP_STD)
DINOV2_MEAN_STD = (IMAGENET_MEAN, IMAGENET_STD)

Attributes = dict[str, dict[str, str]]  # {part: {"color": word, "pattern": word, "shape": word}}


@dataclass
class PretrainingSettings:
    """Data, optimisation and seed of the pretraining (the values the shipped checkpoints were trained with).

    Args:
        seed (`int`): seeds the rendered images (ConceptWorld's `seed`), the initialisation, shuffling, captions
            and masks.
        num_images (`int`): pretraining-split images, rendered once and shared by both models.
        image_size (`int`): image side in pixels.
        batch_size (`int`): images per step (and the number of negatives of CLIP's contrastive loss).
        warmup_fraction (`float`): the learning rate rises linearly over this fraction of the steps, then decays
            to zero along a cosine.
        weight_decay (`float`): AdamW weight decay of the weight matrices (not of biases, norms, embeddings and
            the temperature).
        clip_epochs / dinov2_epochs (`int`): passes over the images.
        clip_learning_rate / dinov2_learning_rate (`float`): AdamW peak learning rates.
        clip_text_freeze_steps (`int`): CLIP's text tower is frozen for this many first steps, then warmed up over
            `clip_text_warmup_steps`.
        clip_group_size (`int`): CLIP's batches are made of groups of this many images: a random anchor and
            `clip_group_size - 1` images whose class-defining attributes differ from the anchor's in exactly one
            (hard negatives: their captions differ by one attribute, so that the contrastive loss cannot be solved
            without reading every attribute). 1 = plain random batches.
        clip_attribute_loss_weight (`float`): weight of CLIP's attribute-caption loss, a contrastive loss with
            captions that differ in one word: for each image and each of its twelve (part, attribute) slots, the
            caption naming its word (e.g. "a bird with a red head.", "a striped-winged bird.") against the same
            caption with every other word of that slot, all encoded by the text tower (0 = plain CLIP).
        clip_patch_loss_weight (`float`): weight of the supervised losses on CLIP's image patch tokens, the same as
            DINOv2's (`patch_supervision_loss`: each patch's part, and that part's colour, pattern and shape), given by
            linear heads that are dropped after pretraining (0 = CLIP's losses only, the checkpoint before this field
            existed). Contrastive training alone left the wing pattern and the tail shape at chance (see the module
            docstring).
        style_caption_probability (`float`): how often a pretraining image in the downstream style (a painting) is
            captioned as such ("a painting of ...").
        monitor_images (`int`): the last images of the pretraining split, held out of training: after every epoch
            the models are scored on them (CLIP: zero-shot attribute accuracy; DINOv2: none), to see convergence.
        masked_image_fraction (`float`): fraction of DINOv2's images (drawn per batch) that are masked.
        mask_ratio (`float`): fraction of a masked image's patches DINOv2 has to reconstruct.
        mask_block (`int`): masks are drawn as `mask_block x mask_block` blocks of patches.
        part_loss_weight / attribute_loss_weight (`float`): weights of DINOv2's auxiliary losses, per-patch part
            classification and per-image attribute classification (0 for pure masked image modelling).
        patch_attribute_loss_weight (`float`): weight of DINOv2's per-patch attribute classification (each
            foreground patch predicts which part has which colour, pattern and shape, see `patch_attribute_targets`),
            which teaches the patch tokens what the CLS token is taught.
        mean_patch_attribute_loss_weight (`float`): weight of DINOv2's attribute classification from the mean of
            the patch tokens, by the CLS token's own attribute classifier, so that the image-level attributes are
            read the same way from the CLS token and from the pooled patches (0 = CLS only, the checkpoint before
            this field existed).
    """

    seed: int = 0
    num_images: int = 30_000
    image_size: int = IMAGE_SIZE
    batch_size: int = 64
    warmup_fraction: float = 0.05
    weight_decay: float = 0.05
    clip_epochs: int = 6
    clip_learning_rate: float = 1e-3
    clip_text_freeze_steps: int = 200
    clip_text_warmup_steps: int = 20
    clip_group_size: int = 4
    clip_attribute_loss_weight: float = 1.0
    clip_patch_loss_weight: float = 1.0
    style_caption_probability: float = 0.25
    monitor_images: int = 1000
    dinov2_epochs: int = 4
    dinov2_learning_rate: float = 1.5e-3
    masked_image_fraction: float = 0.5
    mask_ratio: float = 0.5
    mask_block: int = 2
    part_loss_weight: float = 1.0
    attribute_loss_weight: float = 1.0
    patch_attribute_loss_weight: float = 1.0
    mean_patch_attribute_loss_weight: float = 1.0


# ----------------------------------------------------------------------------------------------------------------
# Model configurations
# ----------------------------------------------------------------------------------------------------------------


def tiny_clip_config(image_size: int = IMAGE_SIZE) -> CLIPConfig:
    """A 4-layer, 128-wide ViT-B/16-style CLIP: 8 x 8 patches of 8 px, a 4-layer 128-wide text tower over CLIP's
    full vocabulary (49,408 tokens, 77 positions), 128-dimensional joint embedding."""
    vision = dict(
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=PATCH_SIZE,
        projection_dim=128,
    )
    text = dict(
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
        max_position_embeddings=CLIP_CONTEXT_LENGTH,
        vocab_size=49_408,
        bos_token_id=49_406,
        eos_token_id=49_407,  # the text embedding is read at the first <|endoftext|>
        pad_token_id=49_407,  # the tokenizer pads with <|endoftext|>
        projection_dim=128,
    )
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=128)


def tiny_dinov2_config(image_size: int = IMAGE_SIZE) -> Dinov2WithRegistersConfig:
    """A 4-layer, 128-wide DINOv2 with 4 register tokens: 8 x 8 patches of 8 px."""
    return Dinov2WithRegistersConfig(
        hidden_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        mlp_ratio=4,
        image_size=image_size,
        patch_size=PATCH_SIZE,
        num_register_tokens=4,
    )


# ----------------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------------


class PretrainingData(NamedTuple):
    """The rendered pretraining split.

    images: `(N, 3, H, W)` uint8.
    patch_parts: `(N, num_patches)` uint8, the majority part id (0 = background) of each patch's pixels, patches in
        the row-major order of the ViT's patch tokens.
    attributes: per image, its part attributes `{part: {"color", "pattern", "shape"}}`.
    styles: per image, its rendering style ("photo" or "painting").
    """

    images: torch.Tensor
    patch_parts: torch.Tensor
    attributes: list[Attributes]
    styles: list[str]

    def subset(self, indices: slice) -> "PretrainingData":
        return PretrainingData(
            self.images[indices], self.patch_parts[indices], self.attributes[indices], self.styles[indices]
        )


def render_pretraining_images(
    num_images: int, seed: int, config: ConceptWorldConfig, patch_size: int = PATCH_SIZE
) -> PretrainingData:
    """Renders the first `num_images` images of ConceptWorld's pretraining split."""
    columns = generate_split("pretraining", num_images, seed=seed, config=config)
    images = torch.from_numpy(np.stack(columns["image"])).permute(0, 3, 1, 2).contiguous()
    part_masks = torch.from_numpy(np.stack(columns["part_masks"]))
    patch_parts = patch_part_labels(part_masks, patch_size).to(torch.uint8)
    return PretrainingData(images, patch_parts, columns["attributes"], columns["style"])


def patch_part_labels(part_masks: torch.Tensor, patch_size: int) -> torch.Tensor:
    """`(N, H, W)` part ids -> `(N, num_patches)` int64: each patch's majority part id (ties go to the smaller id),
    patches in the row-major order of the ViT's patch tokens."""
    num_images, height, width = part_masks.shape
    patches = part_masks.reshape(num_images, height // patch_size, patch_size, width // patch_size, patch_size)
    patches = patches.permute(0, 1, 3, 2, 4).reshape(num_images, -1, patch_size * patch_size).long()
    counts = F.one_hot(patches, num_classes=len(PART_NAMES) + 1).sum(dim=2)
    return counts.argmax(dim=-1)


def normalize(images: torch.Tensor, mean_std: tuple[Sequence[float], Sequence[float]]) -> torch.Tensor:
    """uint8 images `(B, 3, H, W)` -> float32 pixel values `(B, 3, H, W)`, as the image processors compute them
    (rescaled to [0, 1], then standardised per channel: `peft_interp.data.preprocessing.normalize`)."""
    return normalize_uint8(images, *mean_std)


def random_flips(batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """`(batch_size,)` bool: which images of a batch to flip horizontally (each with probability 1/2)."""
    return torch.rand(batch_size, generator=generator) < 0.5


def flip_images(images: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Flips the images `(B, C, H, W)` for which `flips` `(B,)` is true."""
    return torch.where(flips.view(-1, 1, 1, 1), images.flip(-1), images)


def flip_patch_grid(values: torch.Tensor, flips: torch.Tensor, grid_size: int) -> torch.Tensor:
    """Mirrors per-patch values `(B, grid_size * grid_size)` left-right where `flips` `(B,)` is true, to follow
    `flip_images`."""
    grid = values.view(-1, grid_size, grid_size)
    return torch.where(flips.view(-1, 1, 1), grid.flip(-1), grid).reshape(values.shape)


def batches(num_items: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Shuffled index batches of one epoch, dropping the last incomplete one."""
    order = torch.randperm(num_items, generator=generator)
    for start in range(0, num_items - batch_size + 1, batch_size):
        yield order[start : start + batch_size]


def class_key(attributes: Attributes) -> tuple[str, ...]:
    """The class-defining attribute words of an image, in `CLASS_ATTRIBUTES` order."""
    return tuple(attributes[part][kind] for part, kind in CLASS_ATTRIBUTES)


def hard_negative_batches(
    keys: Sequence[tuple[str, ...]], batch_size: int, group_size: int, rng: np.random.Generator
) -> Iterator[torch.Tensor]:
    """Index batches of one epoch made of groups of `group_size` images: an anchor (each image once per epoch, in
    a random order) and `group_size - 1` images whose class-defining attributes differ from the anchor's in exactly
    one, each in another attribute where the data allow (e.g. one with another head colour, one with another wing
    pattern, ...). An epoch has as many batches as `batches` gives; anchors left over are dropped.

    Args:
        keys: per image, its class-defining attribute words (`class_key`).
        batch_size: images per batch, a multiple of `group_size`.
        group_size: 1 gives plain shuffled batches.
        rng: the source of randomness.
    """
    if batch_size % group_size:
        raise ValueError(f"clip_group_size ({group_size}) must divide batch_size ({batch_size})")
    images_by_key: dict[tuple[str, ...], list[int]] = {}
    for index, key in enumerate(keys):
        images_by_key.setdefault(key, []).append(index)
    vocabularies = [attribute_vocabulary(part, kind) for part, kind in CLASS_ATTRIBUTES]
    anchors_per_batch = batch_size // group_size
    order = rng.permutation(len(keys))
    for batch in range(len(keys) // batch_size):
        indices = []
        for anchor in order[batch * anchors_per_batch : (batch + 1) * anchors_per_batch].tolist():
            indices += [anchor, *_one_attribute_neighbours(keys[anchor], group_size - 1, images_by_key, vocabularies, rng)]
        yield torch.tensor(indices)


def _one_attribute_neighbours(key, count, images_by_key, vocabularies, rng) -> list[int]:
    """`count` random images whose key differs from `key` in exactly one attribute, one attribute each (cycling over
    the attributes in a random order); a random image where no such image exists."""
    neighbours = []
    slots = rng.permutation(len(key)).tolist()
    for slot in (slots * count)[:count]:
        candidates = [
            (*key[:slot], word, *key[slot + 1 :]) for word in vocabularies[slot] if word != key[slot]
        ]
        candidates = [candidate for candidate in candidates if candidate in images_by_key]
        if candidates:
            pool = images_by_key[candidates[rng.integers(len(candidates))]]
        else:
            pool = [index for indices in images_by_key.values() for index in indices]
        neighbours.append(pool[rng.integers(len(pool))])
    return neighbours


# ----------------------------------------------------------------------------------------------------------------
# Captions
# ----------------------------------------------------------------------------------------------------------------

_PART_NOUNS = {"head": "head", "body": "body", "wing": "wings", "tail": "tail"}
_PART_ADJECTIVES = {"head": "headed", "body": "bodied", "wing": "winged", "tail": "tailed"}
_PHOTO_PREFIXES = (
    "a photo of",
    "a photo of",
    "a photo of",
    "a picture of",
    "an image of",
    "a drawing of",
    "a rendering of",
    "a close-up photo of",
    "a cropped photo of",
    "a good photo of",
)
_WORD_ORDER = ("shape", "color", "pattern")  # "a long blue striped body"


def _article(phrase: str, rng: np.random.Generator) -> str:
    """Puts "a" or "an" before `phrase`; one time in ten "a", whatever the sound, as in real captions."""
    article = "an" if phrase[0] in "aeiou" and rng.random() >= 0.1 else "a"
    return f"{article} {phrase}"


def _part_phrase(part: str, words: Sequence[str]) -> str:
    """e.g. ("wing", ["red", "striped"]) -> "red striped wings"."""
    return " ".join([*words, _PART_NOUNS[part]])


def _join_phrases(phrases: Sequence[str]) -> str:
    """["a", "b", "c"] -> "a, b and c"."""
    return phrases[0] if len(phrases) == 1 else f"{', '.join(phrases[:-1])} and {phrases[-1]}"


def _with_part_article(part: str, phrase: str, rng: np.random.Generator) -> str:
    return phrase if part == "wing" else _article(phrase, rng)  # wings are plural


def _choose_attributes(attributes: Attributes, rng: np.random.Generator) -> list[tuple[str, str]]:
    """The (part, kind) pairs a caption mentions: every class-defining attribute (head colour, body colour, wing
    pattern, tail shape), plus each other attribute with probability 1/4; or, one caption in six, a random handful
    (1 to 3) of the twelve attributes, class-defining or not."""
    every_pair = [(part, kind) for part in PART_NAMES for kind in attributes[part]]
    if rng.random() < 1 / 6:
        count = int(rng.integers(1, 4))
        return [every_pair[index] for index in sorted(rng.choice(len(every_pair), count, replace=False))]
    return [pair for pair in every_pair if pair in CLASS_ATTRIBUTES or rng.random() < 0.25]


STYLE_PREFIXES = {"painting": "a painting of"}


def sample_caption(
    attributes: Attributes, rng: np.random.Generator, style: str = "photo", style_caption_probability: float = 0.0
) -> str:
    """A random caption, true of an image with these part attributes.

    Three forms, each after an optional prefix ("a photo of", "a picture of", ...):

    * adjectives, as class names are made: "a red-headed blue-bodied striped-winged long-tailed bird" (class
      attributes in the class names' order, any others after them);
    * a description: "a bird with a round red head, a blue body, striped wings and a long tail" (parts in order or
      shuffled);
    * a mix: "a red-headed bird with a blue body, striped wings and a long tail".

    Like web captions, a caption seldom names how the picture was made: an image in another style than `"photo"` is
    called what it is ("a painting of ...") with probability `style_caption_probability` only, and otherwise gets
    the usual prefixes ("a photo of", ...) or none.

    Args:
        attributes: `{part: {"color", "pattern", "shape"}}` of one image.
        rng: the source of randomness.
        style: the image's rendering style (ConceptWorld's `STYLES`).
        style_caption_probability: how often an image of a style other than `"photo"` is captioned by its style.

    Returns:
        A lower-case sentence, usually ending with a period.
    """
    chosen = _choose_attributes(attributes, rng)
    class_first = sorted(chosen, key=lambda pair: pair not in CLASS_ATTRIBUTES)  # stable: keeps part order
    as_adjectives = {
        0: class_first,  # adjectives only
        1: [],  # description only
        2: class_first[: int(rng.integers(1, len(class_first) + 1))],  # mixed
    }[int(rng.choice(3, p=[0.45, 0.35, 0.2]))]

    adjectives = [f"{attributes[part][kind]}-{_PART_ADJECTIVES[part]}" for part, kind in as_adjectives]
    described = [pair for pair in chosen if pair not in as_adjectives]
    parts = [part for part in PART_NAMES if any(p == part for p, _ in described)]
    if rng.random() < 0.3:
        parts = list(rng.permutation(parts))
    phrases = [
        _with_part_article(
            part,
            _part_phrase(part, [attributes[part][kind] for kind in _WORD_ORDER if (part, kind) in described]),
            rng,
        )
        for part in parts
    ]

    subject = _article(" ".join([*adjectives, "bird"]), rng)
    if phrases:
        subject = f"{subject} with {_join_phrases(phrases)}"
    if style != "photo" and rng.random() < style_caption_probability:
        subject = f"{STYLE_PREFIXES[style]} {subject}"
    elif rng.random() < 0.7:
        subject = f"{_PHOTO_PREFIXES[rng.integers(len(_PHOTO_PREFIXES))]} {subject}"
    return f"{subject}." if rng.random() < 0.8 else subject


# ----------------------------------------------------------------------------------------------------------------
# Optimisation
# ----------------------------------------------------------------------------------------------------------------


def parameter_groups(named_parameters, weight_decay: float, **options) -> list[dict]:
    """Two AdamW groups: the weight matrices, with weight decay, and the rest (biases, norms, embeddings, tokens,
    temperature), without. `options` (e.g. `tower="text"`) are added to both groups."""
    decay, no_decay = [], []
    for name, parameter in named_parameters:
        is_matrix = parameter.ndim >= 2 and "embedding" not in name and "token" not in name
        (decay if is_matrix else no_decay).append(parameter)
    return [
        {"params": decay, "weight_decay": weight_decay, **options},
        {"params": no_decay, "weight_decay": 0.0, **options},
    ]


def make_optimizer(groups: list[dict], learning_rate: float) -> torch.optim.AdamW:
    """AdamW with CLIP's betas and epsilon."""
    return torch.optim.AdamW(groups, lr=learning_rate, betas=(0.9, 0.98), eps=1e-6)


def warmup_cosine(total_steps: int, warmup_fraction: float) -> Callable[[int], float]:
    """Learning-rate multiplier: linear warm-up over `warmup_fraction` of the steps, then cosine decay to 0."""
    warmup_steps = max(1, round(warmup_fraction * total_steps))

    def multiplier(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return multiplier


def _optimisation_step(loss: torch.Tensor, model: nn.Module, optimizer, scheduler) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    scheduler.step()


def _log(name: str, epoch: int, losses: list[float], start: float) -> None:
    print(f"[{name}] epoch {epoch + 1}: loss {np.mean(losses):.4f} ({time.perf_counter() - start:.0f} s)", flush=True)


# ----------------------------------------------------------------------------------------------------------------
# CLIP: contrastive image-caption training
# ----------------------------------------------------------------------------------------------------------------

MAX_LOGIT_SCALE = math.log(100.0)


def delayed_warmup(start_step: int, warmup_steps: int, schedule: Callable[[int], float]) -> Callable[[int], float]:
    """`schedule`, but 0 before `start_step` and ramped up linearly over the `warmup_steps` steps after it."""

    def multiplier(step: int) -> float:
        if step < start_step:
            return 0.0
        return schedule(step) * min(1.0, (step - start_step + 1) / warmup_steps)

    return multiplier


_SLOT_TEMPLATES = (
    "a bird with {article} {word} {noun}.",  # "a bird with a red head.", "a bird with striped wings."
    "{article_word} {word}-{adjective} bird.",  # "a red-headed bird.", "an oval-..."
)


def attribute_captions(template: int) -> tuple[list[str], list[int]]:
    """Every one-word variant of a caption per (part, attribute) slot (`ATTRIBUTE_SLOTS` order).

    Returns:
        The captions, slot after slot, each slot's words in vocabulary order, and the number of words of each slot.
    """
    captions, sizes = [], []
    for part, kind in ATTRIBUTE_SLOTS:
        words = attribute_vocabulary(part, kind)
        for word in words:
            article = "" if part == "wing" else ("an" if word[0] in "aeiou" else "a")
            captions.append(
                " ".join(_SLOT_TEMPLATES[template].format(
                    article=article, word=word, noun=_PART_NOUNS[part], adjective=_PART_ADJECTIVES[part],
                    article_word="an" if word[0] in "aeiou" else "a",
                ).split())  # fmt: skip
            )
        sizes.append(len(words))
    return captions, sizes


def attribute_caption_loss(
    image_embeds: torch.Tensor, slot_text_embeds: torch.Tensor, slot_sizes: list[int], targets: torch.Tensor,
    logit_scale: torch.Tensor,
) -> torch.Tensor:
    """Mean over slots of the cross-entropy of picking an image's word among its slot's one-word caption variants.

    Args:
        image_embeds: `(B, E)` normalised image embeddings.
        slot_text_embeds: `(W, E)` normalised embeddings of `attribute_captions`' captions.
        slot_sizes: words per slot (sums to `W`).
        targets: `(B, 12)` index of each image's word in each slot (`attribute_targets`).
        logit_scale: CLIP's log temperature.
    """
    logits = logit_scale.exp() * image_embeds @ slot_text_embeds.T  # (B, W)
    per_slot = [F.cross_entropy(chunk, targets[:, slot]) for slot, chunk in enumerate(logits.split(slot_sizes, -1))]
    return torch.stack(per_slot).mean()


EpochCallback = Callable[[nn.Module, int, list[float]], None]
"""Called after every epoch with the model (in eval mode; it is put back in train mode after), the epoch index and
the mean losses of the epochs so far."""


def train_clip(
    data: PretrainingData, settings: PretrainingSettings, on_epoch_end: EpochCallback | None = None
) -> tuple[CLIPModel, list[float]]:
    """Trains a tiny CLIP from scratch with the symmetric InfoNCE loss of `CLIPModel(..., return_loss=True)`, on
    batches of hard-negative groups (`hard_negative_batches`).

    Args:
        data: the pretraining images and their attributes (a new caption is drawn for every image every epoch).
        settings: epochs, batch size, learning rate, text-tower freeze, group size, seed.
        on_epoch_end: called after every epoch (see `EpochCallback`).

    Returns:
        The trained model (in eval mode) and the mean loss of each epoch.
    """
    torch.manual_seed(settings.seed)
    model = CLIPModel(tiny_clip_config(settings.image_size)).train()
    tokenizer = load_clip_tokenizer()
    generator = torch.Generator().manual_seed(settings.seed)
    caption_rng = np.random.default_rng([settings.seed, 1])
    batch_rng = np.random.default_rng([settings.seed, 2])
    keys = [class_key(attributes) for attributes in data.attributes]
    targets = attribute_targets(data.attributes)  # (N, 12)
    slot_captions = [attribute_captions(template) for template in range(len(_SLOT_TEMPLATES))]
    slot_tokens = [tokenizer(captions, padding=True, return_tensors="pt") for captions, _ in slot_captions]

    patch_heads = _clip_patch_heads(model, settings)
    trained = nn.ModuleList([model, patch_heads]) if patch_heads is not None else model
    grid_size = settings.image_size // model.config.vision_config.patch_size
    text = [(name, p) for name, p in trained.named_parameters() if "text_model." in name]
    rest = [(name, p) for name, p in trained.named_parameters() if "text_model." not in name]
    groups = [
        *parameter_groups(rest, settings.weight_decay, tower="image"),
        *parameter_groups(text, settings.weight_decay, tower="text"),
    ]
    optimizer = make_optimizer(groups, settings.clip_learning_rate)
    schedule = warmup_cosine(settings.clip_epochs * (len(data.images) // settings.batch_size), settings.warmup_fraction)
    text_schedule = delayed_warmup(settings.clip_text_freeze_steps, settings.clip_text_warmup_steps, schedule)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, [text_schedule if group["tower"] == "text" else schedule for group in groups]
    )
    epoch_losses, start = [], time.perf_counter()
    for epoch in range(settings.clip_epochs):
        losses = []
        for indices in hard_negative_batches(keys, settings.batch_size, settings.clip_group_size, batch_rng):
            captions = [
                sample_caption(
                    data.attributes[index], caption_rng, data.styles[index], settings.style_caption_probability
                )
                for index in indices.tolist()
            ]
            tokens = tokenizer(
                captions, padding=True, truncation=True, max_length=CLIP_CONTEXT_LENGTH, return_tensors="pt"
            )
            flips = random_flips(len(indices), generator)
            pixel_values = normalize(flip_images(data.images[indices], flips), CLIP_MEAN_STD)
            outputs = model(**tokens, pixel_values=pixel_values, return_loss=True)
            loss = outputs.loss
            if patch_heads is not None:
                patch_tokens = outputs.vision_model_output.last_hidden_state[:, 1:]  # (B, L, D)
                patch_parts = flip_patch_grid(data.patch_parts[indices].long(), flips, grid_size)
                loss = loss + settings.clip_patch_loss_weight * patch_supervision_loss(
                    patch_heads(patch_tokens), patch_parts, targets[indices]
                )
            if settings.clip_attribute_loss_weight:
                template = int(batch_rng.integers(len(_SLOT_TEMPLATES)))
                slot_text = F.normalize(model.get_text_features(**slot_tokens[template]).pooler_output, dim=-1)
                loss = loss + settings.clip_attribute_loss_weight * attribute_caption_loss(
                    outputs.image_embeds, slot_text, slot_captions[template][1], targets[indices], model.logit_scale
                )
            _optimisation_step(loss, trained, optimizer, scheduler)
            with torch.no_grad():
                model.logit_scale.clamp_(0.0, MAX_LOGIT_SCALE)
            losses.append(loss.item())
        epoch_losses.append(float(np.mean(losses)))
        _log("clip", epoch, losses, start)
        _end_epoch(model, epoch, epoch_losses, on_epoch_end)
    return model.eval(), epoch_losses


def _clip_patch_heads(model: CLIPModel, settings: PretrainingSettings) -> nn.Linear | None:
    """The linear heads of `patch_supervision_loss` on CLIP's image patch tokens (None when its weight is 0), made
    after the model so that the model's initialisation does not depend on them."""
    if not settings.clip_patch_loss_weight:
        return None
    num_outputs = 1 + len(PART_NAMES) + sum(PATCH_ATTRIBUTE_SIZES)
    return nn.Linear(model.config.vision_config.hidden_size, num_outputs)


def _end_epoch(model: nn.Module, epoch: int, epoch_losses: list[float], on_epoch_end: EpochCallback | None) -> None:
    if on_epoch_end is not None:
        model.eval()
        with torch.no_grad():
            on_epoch_end(model, epoch, epoch_losses)
        model.train()


ATTRIBUTE_PROMPTS = {
    ("head", "color"): "a photo of a bird with a {} head.",
    ("body", "color"): "a photo of a bird with a {} body.",
    ("wing", "pattern"): "a photo of a bird with {} wings.",
    ("tail", "shape"): "a photo of a bird with a {} tail.",
}
"""One prompt per class-defining attribute: a CLIP that reads the attribute picks the image's word among the
attribute's vocabulary with it."""


def attribute_zero_shot(
    model: CLIPModel, images: torch.Tensor, attributes: Sequence[Attributes], batch_size: int = 256
) -> dict[str, float]:
    """Zero-shot accuracy (%) of `model` on each class-defining attribute: for each image and attribute, the word
    whose prompt (`ATTRIBUTE_PROMPTS`) is most similar to the image, against the image's true word.

    Args:
        model: a CLIP.
        images: `(N, 3, H, W)` uint8 images.
        attributes: per image, `{part: {"color", "pattern", "shape"}}`.

    Returns:
        `{"head color": 83.1, "body color": ..., "wing pattern": ..., "tail shape": ...}`.
    """
    tokenizer = load_clip_tokenizer()
    features = torch.cat([
        F.normalize(model.get_image_features(pixel_values=normalize(chunk, CLIP_MEAN_STD)).pooler_output, dim=-1)
        for chunk in images.split(batch_size)
    ])  # fmt: skip
    scores = {}
    for (part, kind), template in ATTRIBUTE_PROMPTS.items():
        words = attribute_vocabulary(part, kind)
        tokens = tokenizer([template.format(word) for word in words], padding=True, return_tensors="pt")
        text = F.normalize(model.get_text_features(**tokens).pooler_output, dim=-1)  # (W, E)
        truth = torch.tensor([words.index(image[part][kind]) for image in attributes])
        scores[f"{part} {kind}"] = 100.0 * ((features @ text.T).argmax(-1) == truth).float().mean().item()
    return scores


# ----------------------------------------------------------------------------------------------------------------
# DINOv2: masked image modelling
# ----------------------------------------------------------------------------------------------------------------


def patchify(pixel_values: torch.Tensor, patch_size: int) -> torch.Tensor:
    """`(B, C, H, W)` -> `(B, num_patches, patch_size * patch_size * C)`, patches in the row-major order of the
    ViT's patch tokens."""
    batch, channels, height, width = pixel_values.shape
    grid_h, grid_w = height // patch_size, width // patch_size
    patches = pixel_values.reshape(batch, channels, grid_h, patch_size, grid_w, patch_size)
    return patches.permute(0, 2, 4, 3, 5, 1).reshape(batch, grid_h * grid_w, patch_size * patch_size * channels)


def sample_block_masks(
    batch_size: int, grid_size: int, mask_ratio: float, block: int, generator: torch.Generator
) -> torch.Tensor:
    """Random masks of `block x block` blocks of patches, the same number of blocks in every image.

    Returns:
        `(batch_size, grid_size * grid_size)` bool, `True` = masked, in the patch tokens' row-major order.
    """
    blocks_per_side = grid_size // block
    num_blocks = blocks_per_side**2
    num_masked = round(mask_ratio * num_blocks)
    ranks = torch.rand(batch_size, num_blocks, generator=generator).argsort(dim=1).argsort(dim=1)
    block_masks = (ranks < num_masked).view(batch_size, blocks_per_side, 1, blocks_per_side, 1)
    masks = block_masks.expand(-1, -1, block, -1, block).reshape(batch_size, grid_size, grid_size)
    return masks.reshape(batch_size, grid_size * grid_size)


def masked_patch_loss(
    predictions: torch.Tensor, pixel_values: torch.Tensor, masks: torch.Tensor, patch_size: int
) -> torch.Tensor:
    """Mean squared error of the predicted pixels of the masked patches, each patch's target standardised (MAE).

    Args:
        predictions: `(B, num_patches, patch_size * patch_size * 3)`.
        pixel_values: `(B, 3, H, W)`, the unmasked input.
        masks: `(B, num_patches)` bool, `True` = masked.
    """
    targets = patchify(pixel_values, patch_size)
    targets = (targets - targets.mean(-1, keepdim=True)) / (targets.var(-1, keepdim=True) + 1e-6).sqrt()
    per_patch = (predictions - targets).pow(2).mean(-1)
    return (per_patch * masks).sum() / masks.sum().clamp(min=1)


ATTRIBUTE_SLOTS = tuple((part, kind) for part in PART_NAMES for kind in ATTRIBUTE_KINDS)
"""The twelve (part, attribute kind) pairs of an image, in the order of `attribute_targets`' columns."""


def attribute_targets(attributes: Sequence[Attributes]) -> torch.Tensor:
    """Per image, the index of each of its twelve attribute words in its vocabulary: `(N, 12)` int64."""
    vocabularies = [attribute_vocabulary(part, kind) for part, kind in ATTRIBUTE_SLOTS]
    return torch.tensor(
        [
            [vocabulary.index(image[part][kind]) for vocabulary, (part, kind) in zip(vocabularies, ATTRIBUTE_SLOTS)]
            for image in attributes
        ]
    )


def patch_attribute_targets(patch_parts: torch.Tensor, attributes: torch.Tensor) -> torch.Tensor:
    """Per patch, the colour, pattern and shape of the part it shows, each as a (part, word) pair: `(B, L, 3)`
    int64, -100 on background patches.

    Targets name the part with the word (`part * vocabulary size + word`: a red head and a red body are different
    targets), so that patch tokens tell which part has which attribute and the mean of the patch tokens still does
    (with one "red" target for every part, a red-headed blue-bodied bird and a blue-headed red-bodied one would
    have the same mean). Colours index `COLORS`, patterns `PATTERNS`, shapes the concatenation of every part's shape
    words (`PART_SHAPES` in `PART_NAMES` order).

    Args:
        patch_parts: `(B, L)` part id of each patch (0 = background).
        attributes: `(B, 12)` attribute word indices (see `attribute_targets`).
    """
    kinds = len(ATTRIBUTE_KINDS)
    part = (patch_parts.long() - 1).clamp(min=0)  # (B, L), background read as part 0 and masked below
    columns = part.unsqueeze(-1) * kinds + torch.arange(kinds)  # (B, L, 3): the part's (color, pattern, shape) slots
    words = attributes.unsqueeze(1).expand(-1, patch_parts.shape[1], -1).gather(2, columns)
    shape_offsets = torch.tensor(np.cumsum([0, *(len(PART_SHAPES[name]) for name in PART_NAMES[:-1])]))
    targets = torch.stack(
        [part * len(COLORS) + words[..., 0], part * len(PATTERNS) + words[..., 1], shape_offsets[part] + words[..., 2]],
        dim=-1,
    )
    return targets.masked_fill((patch_parts == 0).unsqueeze(-1), -100)


PATCH_ATTRIBUTE_SIZES = (
    len(PART_NAMES) * len(COLORS),
    len(PART_NAMES) * len(PATTERNS),
    sum(len(shapes) for shapes in PART_SHAPES.values()),
)
"""Classes of `patch_attribute_targets`' three columns: (part, colour) pairs, (part, pattern) pairs, (part, shape)."""


def patch_attribute_loss(logits: torch.Tensor, patch_parts: torch.Tensor, attributes: torch.Tensor) -> torch.Tensor:
    """Mean over colour, pattern and shape of the cross-entropy of each foreground patch's (part, word) target
    (`patch_attribute_targets`); background patches are ignored.

    Args:
        logits: `(B, L, sum(PATCH_ATTRIBUTE_SIZES))` per-patch logits, colour then pattern then shape.
        patch_parts: `(B, L)` part id of each patch (0 = background).
        attributes: `(B, 12)` attribute word indices (see `attribute_targets`).
    """
    targets = patch_attribute_targets(patch_parts, attributes)  # (B, L, 3)
    per_kind = logits.split(PATCH_ATTRIBUTE_SIZES, dim=-1)
    losses = [
        F.cross_entropy(kind_logits.flatten(0, 1), targets[..., i].flatten(), ignore_index=-100)
        for i, kind_logits in enumerate(per_kind)
    ]
    return sum(losses) / len(losses)


def patch_supervision_loss(logits: torch.Tensor, patch_parts: torch.Tensor, attributes: torch.Tensor) -> torch.Tensor:
    """Part classification of every patch plus `patch_attribute_loss`, with equal weights.

    Args:
        logits: `(B, L, 1 + len(PART_NAMES) + sum(PATCH_ATTRIBUTE_SIZES))`: the part logits (background first), then
            the per-patch attribute logits.
        patch_parts: `(B, L)` part id of each patch (0 = background).
        attributes: `(B, 12)` attribute word indices.
    """
    part_logits, attribute_logits = logits.split([1 + len(PART_NAMES), sum(PATCH_ATTRIBUTE_SIZES)], dim=-1)
    part_loss = F.cross_entropy(part_logits.flatten(0, 1), patch_parts.flatten())
    return part_loss + patch_attribute_loss(attribute_logits, patch_parts, attributes)


class Dinov2Pretraining(nn.Module):
    """A DINOv2 encoder with the linear heads used only during pretraining (they are not shipped): a pixel decoder
    for the masked patches, a part classifier for every patch token and attribute classifiers for the CLS token."""

    def __init__(
        self,
        config: Dinov2WithRegistersConfig,
        part_loss_weight: float,
        attribute_loss_weight: float,
        patch_attribute_loss_weight: float = 0.0,
        mean_patch_attribute_loss_weight: float = 0.0,
    ):
        super().__init__()
        self.encoder = Dinov2WithRegistersModel(config)
        self.decoder = nn.Linear(config.hidden_size, config.patch_size**2 * config.num_channels)
        self.part_classifier = nn.Linear(config.hidden_size, len(PART_NAMES) + 1)
        self.vocabulary_sizes = [len(attribute_vocabulary(part, kind)) for part, kind in ATTRIBUTE_SLOTS]
        self.attribute_classifier = nn.Linear(config.hidden_size, sum(self.vocabulary_sizes))
        self.num_prefix_tokens = 1 + config.num_register_tokens
        self.part_loss_weight = part_loss_weight
        self.attribute_loss_weight = attribute_loss_weight
        self.patch_attribute_loss_weight = patch_attribute_loss_weight
        self.mean_patch_attribute_loss_weight = mean_patch_attribute_loss_weight
        self.patch_attribute_classifier = nn.Linear(config.hidden_size, sum(PATCH_ATTRIBUTE_SIZES))

    def forward(
        self, pixel_values: torch.Tensor, masks: torch.Tensor, patch_parts: torch.Tensor, attributes: torch.Tensor
    ) -> torch.Tensor:
        """The loss (a scalar).

        Args:
            pixel_values: `(B, 3, H, W)` images.
            masks: `(B, num_patches)` bool, True = masked (an image may have no masked patch).
            patch_parts: `(B, num_patches)` part id of each patch.
            attributes: `(B, 12)` attribute word indices (see `attribute_targets`).
        """
        hidden = self.encoder(pixel_values=pixel_values, bool_masked_pos=masks).last_hidden_state
        patch_tokens = hidden[:, self.num_prefix_tokens :]
        loss = masked_patch_loss(self.decoder(patch_tokens), pixel_values, masks, self.encoder.config.patch_size)
        part_logits = self.part_classifier(patch_tokens)  # (B, num_patches, 5)
        loss = loss + self.part_loss_weight * F.cross_entropy(part_logits.flatten(0, 1), patch_parts.flatten())
        loss = loss + self.attribute_loss_weight * self.attribute_loss(hidden[:, 0], attributes)
        if self.mean_patch_attribute_loss_weight:
            mean_patch_loss = self.attribute_loss(patch_tokens.mean(1), attributes)
            loss = loss + self.mean_patch_attribute_loss_weight * mean_patch_loss
        if self.patch_attribute_loss_weight:
            logits = self.patch_attribute_classifier(patch_tokens)
            loss = loss + self.patch_attribute_loss_weight * patch_attribute_loss(logits, patch_parts, attributes)
        return loss

    def attribute_loss(self, features: torch.Tensor, attributes: torch.Tensor) -> torch.Tensor:
        """Mean over the twelve attribute slots of the cross-entropy of `attribute_classifier(features)`.

        Args:
            features: `(B, D)` one vector per image (the CLS token or the mean of the patch tokens).
            attributes: `(B, 12)` attribute word indices.
        """
        logits = self.attribute_classifier(features).split(self.vocabulary_sizes, dim=-1)
        return sum(F.cross_entropy(slot, attributes[:, i]) for i, slot in enumerate(logits)) / len(logits)


def train_dinov2(
    data: PretrainingData, settings: PretrainingSettings, on_epoch_end: EpochCallback | None = None
) -> tuple[Dinov2WithRegistersModel, list[float]]:
    """Trains a tiny DINOv2 from scratch by masked image modelling, with the auxiliary part and attribute losses.

    Args:
        data: the pretraining images, the part ids of their patches and their attributes.
        settings: epochs, batch size, learning rate, masking, loss weights, seed.

    Returns:
        The trained encoder (in eval mode; the heads are dropped) and the mean loss of each epoch.
    """
    torch.manual_seed(settings.seed)
    config = tiny_dinov2_config(settings.image_size)
    model = Dinov2Pretraining(
        config,
        settings.part_loss_weight,
        settings.attribute_loss_weight,
        settings.patch_attribute_loss_weight,
        settings.mean_patch_attribute_loss_weight,
    ).train()
    generator = torch.Generator().manual_seed(settings.seed + 1)
    grid_size = settings.image_size // config.patch_size
    attributes = attribute_targets(data.attributes)

    optimizer = make_optimizer(
        parameter_groups(model.named_parameters(), settings.weight_decay), settings.dinov2_learning_rate
    )
    total_steps = settings.dinov2_epochs * (len(data.images) // settings.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total_steps, settings.warmup_fraction))
    epoch_losses, start = [], time.perf_counter()
    for epoch in range(settings.dinov2_epochs):
        losses = []
        for indices in batches(len(data.images), settings.batch_size, generator):
            flips = random_flips(len(indices), generator)
            pixel_values = normalize(flip_images(data.images[indices], flips), DINOV2_MEAN_STD)
            patch_parts = flip_patch_grid(data.patch_parts[indices].long(), flips, grid_size)
            masks = sample_block_masks(len(indices), grid_size, settings.mask_ratio, settings.mask_block, generator)
            masks &= (torch.rand(len(indices), generator=generator) < settings.masked_image_fraction)[:, None]
            loss = model(pixel_values, masks, patch_parts, attributes[indices])
            _optimisation_step(loss, model, optimizer, scheduler)
            losses.append(loss.item())
        epoch_losses.append(float(np.mean(losses)))
        _log("dinov2", epoch, losses, start)
        _end_epoch(model.encoder, epoch, epoch_losses, on_epoch_end)  # the heads are linear: no mode to switch
    return model.encoder.eval(), epoch_losses


# ----------------------------------------------------------------------------------------------------------------
# Saving
# ----------------------------------------------------------------------------------------------------------------


def image_processor(name: str, image_size: int = IMAGE_SIZE):
    """The image processor matching `normalize(images, ...)` for backbone `name` ("clip" or "dinov2"): a resize of
    the shortest edge and a centre crop to `image_size` (no-ops on ConceptWorld images), rescaling to [0, 1] and the
    model's mean and std."""
    from transformers import BitImageProcessorPil, CLIPImageProcessorPil

    processor_class, (mean, std) = {
        "clip": (CLIPImageProcessorPil, CLIP_MEAN_STD),
        "dinov2": (BitImageProcessorPil, DINOV2_MEAN_STD),
    }[name]
    return processor_class(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        image_mean=list(mean),
        image_std=list(std),
    )


def save_backbone(model: nn.Module, directory, processor, tokenizer=None, dtype: torch.dtype = torch.float16) -> None:
    """Saves `model` (as safetensors, in `dtype`), its image processor and, for CLIP, its tokenizer in `directory`."""
    model.to(dtype).save_pretrained(directory)
    model.float()
    processor.save_pretrained(directory)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
