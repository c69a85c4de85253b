"""Names for learnt concepts, so that legends, cards and ``explanation.json`` say "head" instead of "concept 0".

:func:`name_concepts` runs a model's ``explain`` over images and names each of its concept maps (IVPT's concepts;
any explanation with ``maps`` works) from the best evidence available:

* **ground-truth part masks** (ConceptWorld's ``part_masks``): the part holding, on average over the images, the
  largest share of the concept map's mass (as in the ``concept_alignment`` metric);
* **ground-truth part keypoints** (CUB's ``part_locs.txt``, see :func:`peft_interp.evaluation.read_cub_parts`): the
  part whose visible keypoint falls most often in the box around the map's peak, relative to how often that part is
  visible (the EvalProtoPNet part vectors);
* otherwise a **CLIP vocabulary**: each concept's region (the image with everything but the map's top patches
  deleted) is embedded by a CLIP image tower, averaged over the images where the concept fires most, and compared with
  ``template.format(word)`` of each candidate word through the CLIP text tower; the most similar word names it (for
  IVPT on a CLIP vision tower, its own ``CLIPModel`` with the adapter switched off).

The names are stored in the adapter's config (``concept_names``), so they travel with ``save_pretrained``; two
concepts on the same part are named ``"head"`` and ``"head 2"``. :func:`naming_accuracy` checks names on held-out
images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .evaluation.deletion import delete_patches, top_patch_masks
from .evaluation.parts import part_mass, part_vectors, scaled_box_half_size

DEFAULT_TEMPLATE = "a photo of the {} of a bird."
DEFAULT_VOCABULARY = (
    "head", "beak", "eye", "crown", "throat", "neck", "breast", "belly", "back", "body", "wing", "tail", "leg",
    "foot", "background",
)  # fmt: skip


@dataclass
class ConceptNaming:
    """Names of ``N`` concepts and the evidence behind them.

    Args:
        names: ``N`` unique names (a part/word used twice gets `` 2``, `` 3`` ...).
        labels: ``N`` part or word each concept was matched to (may repeat).
        scores: ``(N, K)`` the evidence per concept and candidate part/word (mass share, hit rate or cosine).
        candidates: the ``K`` parts/words.
        source: ``"part masks"``, ``"part keypoints"`` or ``"CLIP vocabulary"``.
    """

    names: list[str]
    labels: list[str]
    scores: torch.Tensor
    candidates: list[str]
    source: str

    def lines(self) -> list[str]:
        """``"concept 0 -> head (share 0.62)"``, one per concept."""
        best = self.scores.max(dim=1).values.tolist()
        return [f"concept {n} -> {name} ({self.source}: {score:.2f})" for n, (name, score) in
                enumerate(zip(self.names, best))]  # fmt: skip


def unique_names(labels: Sequence[str]) -> list[str]:
    """``["head", "wing", "head"]`` -> ``["head", "wing", "head 2"]``."""
    seen: dict[str, int] = {}
    names = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        names.append(label if seen[label] == 1 else f"{label} {seen[label]}")
    return names


def _naming(scores: torch.Tensor, candidates: Sequence[str], source: str) -> ConceptNaming:
    labels = [candidates[k] for k in scores.argmax(dim=1).tolist()]
    return ConceptNaming(unique_names(labels), labels, scores, list(candidates), source)


# ------------------------------------------------------------------------------------------------- from evidence
def name_from_part_mass(mass: torch.Tensor, part_names: Sequence[str]) -> ConceptNaming:
    """Names from ``(I, N, K)`` shares of each concept map's mass inside each ground-truth part
    (:func:`peft_interp.evaluation.part_mass`): the part with the largest mean share."""
    if mass.shape[-1] != len(part_names):
        raise ValueError(f"Got {len(part_names)} part names for {mass.shape[-1]} parts.")
    return _naming(mass.float().mean(dim=0), part_names, "part masks")


def name_from_part_vectors(vectors: torch.Tensor, visible: torch.Tensor, part_names: Sequence[str]) -> ConceptNaming:
    """Names from ``(I, N, K)`` EvalProtoPNet part vectors and ``(I, K)`` keypoint visibility: the part whose
    keypoint is in the box around the concept's peak most often, per image where that part is visible."""
    if vectors.shape[-1] != len(part_names):
        raise ValueError(f"Got {len(part_names)} part names for {vectors.shape[-1]} parts.")
    hits = vectors.float().sum(dim=0)  # (N, K)
    shown = visible.float().sum(dim=0).clamp_min(1)  # (K,)
    return _naming(hits / shown, part_names, "part keypoints")


def name_from_features(
    region_features: torch.Tensor, word_features: torch.Tensor, words: Sequence[str]
) -> ConceptNaming:
    """Names from ``(N, P)`` concept region features and ``(K, P)`` word features of a CLIP model: the word of
    highest cosine similarity."""
    scores = F.normalize(region_features.float(), dim=-1) @ F.normalize(word_features.float(), dim=-1).T
    return _naming(scores, words, "CLIP vocabulary")


# ---------------------------------------------------------------------------------------------------- from a model
def _tuner(model):
    from peft import PeftModel

    return model.base_model if isinstance(model, PeftModel) else model


@torch.no_grad()
def concept_maps(model, pixel_values: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """``(I, N, h, w)`` the explanation maps of every image, in eval mode, batch by batch."""
    tuner = _tuner(model)
    was_training = tuner.training
    tuner.eval()
    try:
        maps = [tuner.explain(pixel_values[start : start + batch_size]).maps for start in
                range(0, len(pixel_values), batch_size)]  # fmt: skip
    finally:
        tuner.train(was_training)
    if maps[0] is None:
        raise ValueError(f"{type(tuner).__name__}'s explanation has no concept maps to name.")
    return torch.cat(maps).float().cpu()


@torch.no_grad()
def region_features(
    clip_model, maps: torch.Tensor, clip_pixel_values: torch.Tensor, top_images: int = 8, fraction: float = 0.25
) -> torch.Tensor:
    """``(N, P)`` per concept the mean CLIP image feature of its regions: on each of the ``top_images`` images where
    the concept's map is largest, everything but the map's top ``fraction`` of patches deleted (set to 0, the mean
    colour of normalised inputs).

    Args:
        maps: ``(I, N, h, w)``.
        clip_pixel_values: ``(I, 3, S, S)`` the same images, prepared for ``clip_model``.
    """
    masks = top_patch_masks(maps, fraction)  # (I, N, h, w): patches kept
    peaks = maps.flatten(2).max(dim=-1).values  # (I, N)
    features = []
    for n in range(maps.shape[1]):
        images = peaks[:, n].topk(min(top_images, len(maps))).indices
        kept = delete_patches(clip_pixel_values[images], ~masks[images, n])
        embedded = clip_model.get_image_features(pixel_values=kept.to(clip_model.device))
        embedded = getattr(embedded, "pooler_output", embedded)
        features.append(F.normalize(embedded.float(), dim=-1).mean(dim=0))
    return torch.stack(features)


@torch.no_grad()
def word_features(clip_model, tokenizer, words: Sequence[str], template: str = DEFAULT_TEMPLATE) -> torch.Tensor:
    """``(K, P)`` CLIP text features of ``template.format(word)`` for every word."""
    tokens = tokenizer([template.format(word) for word in words], padding=True, return_tensors="pt")
    embedded = clip_model.get_text_features(**{key: value.to(clip_model.device) for key, value in tokens.items()})
    return getattr(embedded, "pooler_output", embedded).float()


def name_concepts(
    model,
    pixel_values: torch.Tensor,
    *,
    part_masks: torch.Tensor | None = None,
    keypoints: torch.Tensor | None = None,
    keypoints_visible: torch.Tensor | None = None,
    part_names: Sequence[str] | None = None,
    vocabulary: Sequence[str] = DEFAULT_VOCABULARY,
    clip_model=None,
    tokenizer=None,
    clip_pixel_values: torch.Tensor | None = None,
    template: str = DEFAULT_TEMPLATE,
    store: bool = True,
    batch_size: int = 32,
) -> ConceptNaming:
    """Name the concepts of ``model`` (a ``PeftModel`` or tuner whose ``explain`` has ``maps``, e.g. IVPT) on the
    images ``pixel_values`` ``(I, 3, S, S)``, and store the names in the active adapter's ``concept_names``.

    Evidence, the first one given: ``part_masks`` ``(I, H, W)`` (0 background, part k has id k + 1) with
    ``part_names``; ``keypoints`` ``(I, K, 2)`` in the ``S x S`` input frame with ``keypoints_visible`` ``(I, K)``
    and ``part_names``; else the CLIP ``vocabulary``, scored with ``clip_model`` (default: the base model when it is
    a ``CLIPModel``, e.g. IVPT on CLIP's vision tower, run with the adapter off) and its ``tokenizer`` (default: the
    shipped CLIP tokenizer) on ``clip_pixel_values`` (default: ``pixel_values``).

    Returns:
        The :class:`ConceptNaming` (names, matched parts/words, evidence table).
    """
    maps = concept_maps(model, pixel_values, batch_size)
    if part_masks is not None:
        if part_names is None:
            raise ValueError("`part_masks` needs `part_names` (part k has id k + 1 in the masks).")
        naming = name_from_part_mass(part_mass(maps, part_masks, len(part_names)), part_names)
    elif keypoints is not None:
        if part_names is None or keypoints_visible is None:
            raise ValueError("`keypoints` needs `keypoints_visible` and `part_names`.")
        frame = pixel_values.shape[-1]
        vectors = part_vectors(maps, keypoints, keypoints_visible, frame, scaled_box_half_size(frame))
        naming = name_from_part_vectors(vectors, keypoints_visible, part_names)
    else:
        clip_inputs = pixel_values if clip_pixel_values is None else clip_pixel_values
        naming = _name_from_vocabulary(model, maps, vocabulary, clip_model, tokenizer, clip_inputs, template)
    if store:
        tuner = _tuner(model)
        tuner.peft_config[tuner.active_adapters[0]].concept_names = list(naming.names)
    return naming


def _name_from_vocabulary(model, maps, vocabulary, clip_model, tokenizer, clip_pixel_values, template):
    from transformers import CLIPModel

    tuner = _tuner(model)
    own = clip_model is None
    if own:
        if not isinstance(tuner.model, CLIPModel):
            raise ValueError(
                "Naming from a vocabulary needs a CLIP model: pass `clip_model` (and `clip_pixel_values` prepared "
                "for it), or give ground-truth `part_masks` / `keypoints`."
            )
        clip_model = tuner.model
    if tokenizer is None:
        from .data.tokenizer import load_clip_tokenizer

        tokenizer = load_clip_tokenizer()
    if own:  # the adapter's prompts must not change the features CLIP's text tower is aligned with
        with model.disable_adapter() if hasattr(model, "disable_adapter") else _adapters_off(tuner):
            regions = region_features(clip_model, maps, clip_pixel_values)
    else:
        regions = region_features(clip_model, maps, clip_pixel_values)
    return name_from_features(regions, word_features(clip_model, tokenizer, vocabulary, template), list(vocabulary))


class _adapters_off:
    def __init__(self, tuner):
        self.tuner = tuner

    def __enter__(self):
        self.tuner.disable_adapter_layers()

    def __exit__(self, *exc):
        self.tuner.enable_adapter_layers()


def naming_accuracy(mass: torch.Tensor, naming: ConceptNaming, part_names: Sequence[str]) -> float:
    """Percentage of (image, concept) pairs of held-out images whose concept map puts its largest share of mass on
    the part the concept is named after.

    Args:
        mass: ``(I, N, K)`` from :func:`peft_interp.evaluation.part_mass` on the held-out images.
    """
    named = torch.tensor([list(part_names).index(label) for label in naming.labels])  # (N,)
    return 100.0 * (mass.argmax(dim=-1) == named[None]).float().mean().item()
