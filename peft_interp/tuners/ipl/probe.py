"""Text features of many prompts that share a prefix, with the prefix encoded once (key/value reuse).

IPL's greedy step scores every candidate word ``w`` by the probe prompts
``[SOS] a photo of a <class c>, with emphasis on: s_1, .., s_k, w [EOS]`` of all classes. Per class, all candidates
share everything before ``w``. CLIP's text transformer is causal and its positions are absolute, so the hidden
states of the shared prefix do not depend on what follows: :func:`encode_prefixes` runs the prefix of each class
once and keeps every layer's keys and values, and :func:`encode_suffixes` runs only the suffix tokens of each
(class, candidate) pair (here ``w`` and ``EOS``: two tokens instead of ~15), attending to the cached prefix. The
features are those of the full prompts (equal up to float rounding; tested against ``CLIPModel.get_text_features``).

The arithmetic is the text tower's own (pre-norm blocks, scaled dot-product attention, ``final_layer_norm`` at the
EOS position, ``text_projection``), driven layer by layer because ``transformers``' CLIP has no key/value cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class PrefixCache:
    """Keys and values of ``R`` right-padded prefixes, for every layer.

    Args:
        keys, values: per layer ``(R, H, L, d)``.
        lengths: ``(R,)`` real length of each prefix (positions ``>= length`` are padding and are never attended).
    """

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    lengths: torch.Tensor

    def select(self, rows: torch.Tensor) -> PrefixCache:
        return PrefixCache([k[rows] for k in self.keys], [v[rows] for v in self.values], self.lengths[rows])


def _heads(tensor: torch.Tensor, num_heads: int) -> torch.Tensor:
    """``(..., T, H * d) -> (..., H, T, d)``."""
    *lead, length, width = tensor.shape
    return tensor.view(*lead, length, num_heads, width // num_heads).transpose(-3, -2)


def _embed(clip, token_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Token plus position embeddings of the frozen text tower, ``(..., T) -> (..., T, D)``."""
    embeddings = clip.text_model.embeddings
    table = getattr(embeddings.token_embedding, "base_layer", embeddings.token_embedding).weight
    return table[token_ids] + embeddings.position_embedding.weight[positions]


@torch.no_grad()
def encode_prefixes(clip, prefix_ids: list[list[int]]) -> PrefixCache:
    """Run the text tower on ``R`` prefixes (token ids, SOS first, no EOS) and keep each layer's keys and values."""
    device = clip.text_model.embeddings.position_embedding.weight.device
    lengths = torch.tensor([len(ids) for ids in prefix_ids], device=device)
    length = int(lengths.max())
    ids = torch.zeros(len(prefix_ids), length, dtype=torch.long, device=device)
    for row, row_ids in enumerate(prefix_ids):
        ids[row, : len(row_ids)] = torch.tensor(row_ids, device=device)
    hidden = _embed(clip, ids, torch.arange(length, device=device))  # (R, L, D); padding only ever looks back
    causal = torch.ones(length, length, dtype=torch.bool, device=device).tril()
    keys, values = [], []
    for layer in clip.text_model.encoder.layers:
        attention = layer.self_attn
        normed = layer.layer_norm1(hidden)
        q, k, v = (_heads(proj(normed), attention.num_heads) for proj in (attention.q_proj, attention.k_proj, attention.v_proj))
        keys.append(k)
        values.append(v)
        mixed = F.scaled_dot_product_attention(q, k, v, attn_mask=causal, scale=attention.scale)  # (R, H, L, d)
        hidden = hidden + attention.out_proj(mixed.transpose(1, 2).flatten(2))
        hidden = hidden + layer.mlp(layer.layer_norm2(hidden))
    return PrefixCache(keys, values, lengths)


def _run_suffixes(clip, cache: PrefixCache, suffix_ids: torch.Tensor):
    """Hidden states ``(R, W, S, D)`` after the last layer, and each layer's suffix keys / values ``(R, W, H, S, d)``."""
    rows, (num_suffixes, suffix_length) = len(cache.lengths), suffix_ids.shape
    device = suffix_ids.device
    positions = cache.lengths[:, None] + torch.arange(suffix_length, device=device)  # (R, S)
    hidden = _embed(clip, suffix_ids[None].expand(rows, -1, -1), positions[:, None])  # (R, W, S, D)
    prefix_length = cache.keys[0].shape[2]
    prefix_mask = torch.arange(prefix_length, device=device)[None] < cache.lengths[:, None]  # (R, L)
    causal = torch.ones(suffix_length, suffix_length, dtype=torch.bool, device=device).tril()  # (S, S)
    mask = torch.cat(
        [prefix_mask[:, None, None, None, :].expand(-1, 1, 1, suffix_length, -1),
         causal[None, None, None].expand(rows, 1, 1, -1, -1)], dim=-1
    )  # (R, 1, 1, S, L + S): broadcast over suffixes and heads  # fmt: skip
    suffix_keys, suffix_values = [], []
    for layer, prefix_keys, prefix_values in zip(clip.text_model.encoder.layers, cache.keys, cache.values):
        attention = layer.self_attn
        normed = layer.layer_norm1(hidden)
        q, k, v = (_heads(proj(normed), attention.num_heads) for proj in (attention.q_proj, attention.k_proj, attention.v_proj))
        suffix_keys.append(k)
        suffix_values.append(v)
        # (R, W, H, S, d) attending to the row's prefix (R, 1, H, L, d) and to the suffix itself
        k = torch.cat([prefix_keys[:, None].expand(-1, num_suffixes, -1, -1, -1), k], dim=3)
        v = torch.cat([prefix_values[:, None].expand(-1, num_suffixes, -1, -1, -1), v], dim=3)
        mixed = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=attention.scale)  # (R, W, H, S, d)
        hidden = hidden + attention.out_proj(mixed.transpose(2, 3).flatten(3))
        hidden = hidden + layer.mlp(layer.layer_norm2(hidden))
    return hidden, suffix_keys, suffix_values


@torch.no_grad()
def encode_suffixes(clip, cache: PrefixCache, suffix_ids: torch.Tensor) -> torch.Tensor:
    """Normalised text features ``(R, W, P)`` of the prompts ``prefix_r + suffix_w`` for every row ``r`` and suffix ``w``.

    Args:
        cache: prefixes of ``R`` rows (:func:`encode_prefixes`).
        suffix_ids: ``(W, S)`` the same ``W`` suffixes for every row, each ending with EOS (read there).
    """
    hidden, _, _ = _run_suffixes(clip, cache, suffix_ids)
    eos = clip.text_model.final_layer_norm(hidden[:, :, -1])  # (R, W, D)
    return F.normalize(clip.text_projection(eos), dim=-1)


@torch.no_grad()
def extend_prefixes(clip, cache: PrefixCache, token_ids: list[int]) -> PrefixCache:
    """The cache of every prefix followed by the same tokens ``token_ids`` (run once, appended in place of padding)."""
    suffix = torch.tensor([token_ids], device=cache.lengths.device)  # (1, S)
    _, suffix_keys, suffix_values = _run_suffixes(clip, cache, suffix)
    rows, extra = len(cache.lengths), len(token_ids)
    length = int(cache.lengths.max()) + extra
    keys, values = [], []
    for old_keys, old_values, new_keys, new_values in zip(cache.keys, cache.values, suffix_keys, suffix_values):
        grown_keys = old_keys.new_zeros(rows, old_keys.shape[1], length, old_keys.shape[3])
        grown_values = torch.zeros_like(grown_keys)
        grown_keys[:, :, : old_keys.shape[2]], grown_values[:, :, : old_values.shape[2]] = old_keys, old_values
        for row, start in enumerate(cache.lengths.tolist()):
            grown_keys[row, :, start : start + extra] = new_keys[row, 0]
            grown_values[row, :, start : start + extra] = new_values[row, 0]
        keys.append(grown_keys)
        values.append(grown_values)
    return PrefixCache(keys, values, cache.lengths + extra)
