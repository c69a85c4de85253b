"""IVPT's modules: concept prototypes, the prompt level of a prompted block, and the concept head.

Shapes: ``B`` batch, ``L = h * w`` patches, ``D`` width, ``K`` prototypes of a level (the last is background),
``N`` final concepts, ``C`` classes. Maps are ``(B, K, L)`` here and reshaped to ``(B, K, h, w)`` for the losses.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .config import IVPTConfig


# ------------------------------------------------------------------------------------------------------ functional
def concept_attention(
    features: torch.Tensor, prototypes: torch.Tensor, spatial_bias: torch.Tensor | None = None
) -> torch.Tensor:
    """Soft assignment of patches to prototypes, ``softmax_k(-||e - p_k||^2 + b_k)``.

    Args:
        features: ``(B, L, D)`` patch features ``e``.
        prototypes: ``(K, D)``.
        spatial_bias: ``(K, L)`` or None.

    Returns:
        ``(B, K, L)``, summing to 1 over ``K``.
    """
    # -||e - p||^2 = 2 e.p - ||p||^2 - ||e||^2; ||e||^2 is the same for every k and cancels in the softmax.
    logits = 2 * features @ prototypes.T - prototypes.pow(2).sum(-1)  # (B, L, K)
    logits = logits.transpose(1, 2)  # (B, K, L)
    if spatial_bias is not None:
        logits = logits + spatial_bias
    return logits.softmax(dim=1)


def renormalize_maps(maps: torch.Tensor, eps: float) -> torch.Tensor:
    """``(A + eps) / sum_k (A + eps)`` over dim 1: keeps every concept strictly positive."""
    maps = maps + eps
    return maps / maps.sum(dim=1, keepdim=True)


def region_features(maps: torch.Tensor, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Intra-region feature aggregation: each patch belongs to its argmax concept, weighted by its soft score.

    ``R = one_hot(argmax_k A) * A`` and ``f_k = sum_l R_kl e_l / sum_l R_kl`` (``f_k = 0`` for an empty region),
    computed as one ``(B, K, L) @ (B, L, D)`` matmul instead of a ``(B, D, K, h, w)`` product.

    Args:
        maps: ``(B, K, L)`` soft assignment ``A``; gradients flow through the soft weights, not the argmax.
        features: ``(B, L, D)``.

    Returns:
        ``(region_feats (B, K, D), region_mass (B, K))`` with ``region_mass = sum_l R_kl``.
    """
    hard = F.one_hot(maps.detach().argmax(dim=1), maps.shape[1]).transpose(1, 2).to(maps.dtype)  # (B, K, L)
    regions = hard * maps
    mass = regions.sum(dim=-1)  # (B, K)
    # An empty region has f_k = 0; dividing it by 1 (not by a tiny clamp) keeps its gradient finite: a tiny
    # denominator overflows the gradient to inf, and inf * 0 (the hard mask) is NaN.
    denominator = torch.where(mass > 0, mass, torch.ones_like(mass))
    region_feats = (regions @ features) / denominator.unsqueeze(-1)
    return region_feats, mass


def group_concepts(
    logits: torch.Tensor, region_mass: torch.Tensor, gumbel: bool, tau: float
) -> torch.Tensor:
    """Fine-to-coarse grouping matrix ``G`` ``(B, K - 1, N)``: each foreground prototype's weights over the final
    concepts (rows sum to 1). Rows of prototypes whose region is empty are uniform ``1 / N``.

    Args:
        logits: ``(B, K - 1, N)`` grouping scores of the foreground prototypes.
        region_mass: ``(B, K - 1)``.
    """
    weights = F.gumbel_softmax(logits, tau=tau, hard=False, dim=-1) if gumbel else logits.softmax(dim=-1)
    uniform = torch.full_like(weights, 1.0 / weights.shape[-1])
    return torch.where((region_mass > 0).unsqueeze(-1), weights, uniform)


# --------------------------------------------------------------------------------------------------------- modules
class ConceptPrototypes(nn.Module):
    """``K`` prototypes ``(K, D)`` ~ N(0, std) and an optional spatial bias ``(K, h, w)`` (zero-initialised)."""

    def __init__(self, num_prototypes: int, hidden_size: int, grid: int, init_std: float, spatial_bias: bool):
        super().__init__()
        self.prototypes = nn.Parameter(torch.randn(num_prototypes, hidden_size) * init_std)
        self.spatial_bias = nn.Parameter(torch.zeros(num_prototypes, grid, grid)) if spatial_bias else None

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, L, D)`` -> attention ``(B, K, L)``."""
        bias = None if self.spatial_bias is None else self.spatial_bias.flatten(1)
        return concept_attention(features, self.prototypes, bias)


@dataclass
class LevelRecord:
    """What a prompted level computed in one forward pass (read by the tuner for losses and explanations)."""

    attention: torch.Tensor  # (B, K, L) before renormalisation
    maps: torch.Tensor  # (B, K, L) renormalised
    grouped_maps: torch.Tensor  # (B, N + 1, L): N grouped foreground maps + background, the consistency prediction
    grouping: torch.Tensor  # (B, K - 1, N)


class IVPTPromptLevel(nn.Module):
    """The prompt source of one prompted block: concepts of its input -> ``N`` prompt tokens.

    1. ``e = final_norm(x.detach())`` on the patch tokens, ``A = softmax(-||e - p||^2 + b)``;
    2. region features ``f`` on ``A.detach()`` (no gradient: prompts are a function of frozen features);
    3. ``G = gumbel_softmax(Linear(f_fg))``; tokens ``T = G.detach()^T f_fg / colsum(G.detach())`` ``(B, N, D)``;
    4. prompts ``= Linear(LayerNorm_(N, D)(T))``;
    5. grouped maps ``M = [G^T A_fg ; A_bg]``, through which the grouping linear and the prototypes learn from the
       cross-layer consistency loss.
    """

    def __init__(
        self,
        config: IVPTConfig,
        num_prototypes: int,
        hidden_size: int,
        grid: int,
        num_prefix_tokens: int,
        final_norm: nn.Module,
    ) -> None:
        super().__init__()
        num_concepts = config.num_concepts
        self.config = config
        self.num_prefix_tokens = num_prefix_tokens
        self.concepts = ConceptPrototypes(
            num_prototypes, hidden_size, grid, config.prototype_init_std, config.spatial_bias == "before_softmax"
        )
        self.grouping = nn.Linear(hidden_size, num_concepts)
        self.prompt_norm = nn.LayerNorm((num_concepts, hidden_size), elementwise_affine=config.train_prompt_norm)
        self.prompt_proj = nn.Linear(hidden_size, hidden_size)
        nn.init.trunc_normal_(self.prompt_proj.weight, std=0.02)
        nn.init.zeros_(self.prompt_proj.bias)
        # The backbone's own (frozen) output norm; kept out of the module tree so it is not saved with the adapter.
        object.__setattr__(self, "final_norm", final_norm)
        # The caller's list of one forward pass, set only within `recording_levels` (the backbone's forward, which
        # runs this level from inside a Hugging Face model, passes nothing else through).
        self.sink: list[LevelRecord] | None = None

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """``(B, P + L, D)`` block input -> prompt tokens ``(B, N, D)``; within :func:`recording_levels`, also
        appends a :class:`LevelRecord` to the caller's list."""
        patches = self.final_norm(hidden_states.detach()[:, self.num_prefix_tokens :])  # (B, L, D)
        patches = patches.to(self.concepts.prototypes.dtype)  # adapters stay fp32 in a half-precision backbone
        attention = self.concepts(patches)  # (B, K, L)
        feats, mass = region_features(attention.detach(), patches)  # (B, K, D), (B, K)
        fg_feats = feats[:, :-1]  # (B, K - 1, D)

        gumbel = self.config.grouping == "gumbel" and (self.training or self.config.gumbel_at_inference)
        # Linears see whole contiguous tensors (slicing after): matmul's kernel choice for a strided 3-D input
        # depends on the weight's requires_grad, which would break bit-exact reloads in inference mode.
        grouping_logits = self.grouping(feats)[:, :-1]  # (B, K - 1, N)
        grouping = group_concepts(grouping_logits, mass[:, :-1], gumbel, self.config.gumbel_tau)
        fixed = grouping.detach()  # (B, K - 1, N)
        tokens = fixed.transpose(1, 2) @ fg_feats / fixed.sum(dim=1).unsqueeze(-1)  # (B, N, D)
        prompts = self.prompt_proj(self.prompt_norm(tokens))

        if self.sink is not None:
            grouped_fg = grouping.transpose(1, 2) @ attention[:, :-1]  # (B, N, L)
            self.sink.append(
                LevelRecord(
                    attention=attention,
                    maps=renormalize_maps(attention, self.config.map_renorm_eps),
                    grouped_maps=torch.cat([grouped_fg, attention[:, -1:]], dim=1),
                    grouping=grouping,
                )
            )
        return prompts


@contextmanager
def recording_levels(levels: dict[str, IVPTPromptLevel]) -> Iterator[dict[str, list[LevelRecord]]]:
    """Collect what the prompt ``levels`` (block name -> level) compute during one backbone forward.

    Yields ``{block name: []}``, lists owned by the caller; each level appends its :class:`LevelRecord` to its own
    list when its block runs. On exit (also when the forward raises) the levels are detached from the lists, so no
    level holds a record or a list between forward passes. Read the lists with :func:`level_records`.
    """
    sinks = {name: [] for name in levels}
    previous = {name: level.sink for name, level in levels.items()}
    for name, level in levels.items():
        level.sink = sinks[name]
    try:
        yield sinks
    finally:
        for name, level in levels.items():
            level.sink = previous[name]


def level_records(sinks: dict[str, list[LevelRecord]]) -> list[LevelRecord]:
    """The one record of every level of :func:`recording_levels`, in its order; an error names a level whose block
    the forward did not reach, or ran more than once."""
    for name, records in sinks.items():
        if len(records) != 1:
            raise RuntimeError(
                f"The prompt level of `{name}` ran {len(records)} times in one forward pass, expected once "
                "(0: the forward did not reach its block)."
            )
    return [records[0] for records in sinks.values()]


@dataclass
class HeadOutput:
    attention: torch.Tensor  # (B, N + 1, L) before renormalisation
    maps: torch.Tensor  # (B, N + 1, L) renormalised: the final concept maps
    features: torch.Tensor  # (B, N + 1, D) modulated region features
    concept_logits: torch.Tensor  # (B, C, N)
    logits: torch.Tensor  # (B, C)


class IVPTHead(nn.Module):
    """The final concept level and classifier.

    Maps ``A`` of the ``N + 1`` final prototypes on the backbone's normalised output *detached*, as on every level
    of the official code, so the map losses (presence, total variation, entropy, equivariance, ...) reach only the
    head's prototypes and spatial bias, never the prompts or the token shift; region features ``F`` pool the
    attached output (classification gradient flows into the prompts, the shift and the prototypes), LayerNorm over the whole ``(N + 1, D)`` matrix
    ("modulation"), background dropped, a shared bias-free linear head per concept -> ``(B, C, N)``; the logits are
    the mean over concepts, so ``concept_logits[b, c, n] / N`` is concept ``n``'s share of class ``c``'s score.
    """

    def __init__(self, config: IVPTConfig, hidden_size: int, grid: int) -> None:
        super().__init__()
        self.config = config
        num_prototypes = config.num_prototypes[-1]
        self.concepts = ConceptPrototypes(
            num_prototypes, hidden_size, grid, config.prototype_init_std, config.spatial_bias == "before_softmax"
        )
        self.modulation = nn.LayerNorm((num_prototypes, hidden_size))
        self.classifier = nn.Linear(hidden_size, config.num_classes, bias=False)
        nn.init.trunc_normal_(self.classifier.weight, std=0.02)

    def forward(self, patches: torch.Tensor) -> HeadOutput:
        """``(B, L, D)`` normalised patch features of the last block -> :class:`HeadOutput`."""
        attention = self.concepts(patches.detach())  # (B, N + 1, L)
        maps = renormalize_maps(attention, self.config.map_renorm_eps)
        feats, _ = region_features(maps, patches)  # (B, N + 1, D)
        feats = self.modulation(feats)
        concept_logits = self.classifier(feats)[:, :-1].transpose(1, 2)  # (B, C, N); see IVPTPromptLevel.forward
        return HeadOutput(attention, maps, feats, concept_logits, concept_logits.mean(dim=-1))
