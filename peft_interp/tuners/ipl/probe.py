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
Two things keep the suffix pass at the cost of its linear layers: the suffixes attend to their row's cached prefix
by one batched matmul per (row, head), never through a copy of the prefix's keys and values per suffix, and in the
last block only the token that is read (EOS) runs its query, output projection and MLP.
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


def _suffix_heads(tensor: torch.Tensor, num_heads: int) -> torch.Tensor:
    """``(R, W, S, H * d) -> (R, H, W, S, d)``."""
    rows, num_suffixes, length, width = tensor.shape
    return tensor.view(rows, num_suffixes, length, num_heads, width // num_heads).permute(0, 3, 1, 2, 4)


def _attend_suffixes(queries, keys, values, prefix_keys, prefix_values, bias) -> torch.Tensor:
    """Attention of the suffix tokens to their row's prefix and to their own suffix, without copying the prefix's
    keys and values once per suffix.

    Args:
        queries: ``(R, H, W, Q, d)``, already scaled: the last ``Q`` tokens of every suffix.
        keys, values: ``(R, H, W, S, d)`` of every suffix token.
        prefix_keys, prefix_values: ``(R, H, L, d)``.
        bias: ``(R, 1, 1, Q, L + S)`` additive mask (``-inf`` at padding and at later suffix tokens).

    Returns:
        ``(R, W, Q, H * d)``.
    """
    rows, heads, num_suffixes, num_queries, dim = queries.shape
    flat = queries.reshape(rows, heads, num_suffixes * num_queries, dim)  # one batched matmul per (row, head)
    to_prefix = (flat @ prefix_keys.transpose(-1, -2)).view(rows, heads, num_suffixes, num_queries, -1)
    to_suffix = queries @ keys.transpose(-1, -2)  # (R, H, W, Q, S)
    weights = torch.softmax(torch.cat([to_prefix, to_suffix], dim=-1) + bias, dim=-1)
    prefix_length = prefix_keys.shape[2]
    mixed = (weights[..., :prefix_length].reshape(rows, heads, num_suffixes * num_queries, prefix_length) @ prefix_values
             ).view_as(queries) + weights[..., prefix_length:] @ values  # (R, H, W, Q, d)  # fmt: skip
    return mixed.permute(0, 2, 3, 1, 4).reshape(rows, num_suffixes, num_queries, heads * dim)


def _run_suffixes(clip, cache: PrefixCache, suffix_ids: torch.Tensor, last_token_only: bool = False):
    """Hidden states after the last layer, and each layer's suffix keys / values ``(R, H, W, S, d)``.

    The hidden states are ``(R, W, S, D)``, or ``(R, W, 1, D)`` with ``last_token_only`` (what the last token of each
    suffix reads: the last layer then runs its query, output projection and MLP on that token alone).
    """
    rows, suffix_length = len(cache.lengths), suffix_ids.shape[1]
    device = suffix_ids.device
    positions = cache.lengths[:, None] + torch.arange(suffix_length, device=device)  # (R, S)
    hidden = _embed(clip, suffix_ids[None].expand(rows, -1, -1), positions[:, None])  # (R, W, S, D)
    prefix_length = cache.keys[0].shape[2]
    padding = torch.arange(prefix_length, device=device)[None] >= cache.lengths[:, None]  # (R, L)
    later = torch.ones(suffix_length, suffix_length, dtype=torch.bool, device=device).triu(1)  # (S, S)
    blocked = torch.cat([padding[:, None].expand(-1, suffix_length, -1), later[None].expand(rows, -1, -1)], dim=-1)
    bias = torch.zeros(blocked.shape, dtype=hidden.dtype, device=device).masked_fill(blocked, float("-inf"))
    bias = bias[:, None, None]  # (R, 1, 1, S, L + S): broadcast over heads and suffixes
    suffix_keys, suffix_values = [], []
    layers = clip.text_model.encoder.layers
    for depth, (layer, prefix_keys, prefix_values) in enumerate(zip(layers, cache.keys, cache.values)):
        attention = layer.self_attn
        num_queries = 1 if last_token_only and depth == len(layers) - 1 else suffix_length
        normed = layer.layer_norm1(hidden)
        keys = _suffix_heads(attention.k_proj(normed), attention.num_heads)
        values = _suffix_heads(attention.v_proj(normed), attention.num_heads)
        queries = _suffix_heads(attention.q_proj(normed[:, :, -num_queries:]) * attention.scale, attention.num_heads)
        suffix_keys.append(keys)
        suffix_values.append(values)
        mixed = _attend_suffixes(queries, keys, values, prefix_keys, prefix_values, bias[..., -num_queries:, :])
        hidden = hidden[:, :, -num_queries:] + attention.out_proj(mixed)
        hidden = hidden + layer.mlp(layer.layer_norm2(hidden))
    return hidden, suffix_keys, suffix_values


@torch.no_grad()
def encode_suffixes(clip, cache: PrefixCache, suffix_ids: torch.Tensor) -> torch.Tensor:
    """Normalised text features ``(R, W, P)`` of the prompts ``prefix_r + suffix_w`` for every row ``r`` and suffix ``w``.

    Args:
        cache: prefixes of ``R`` rows (:func:`encode_prefixes`).
        suffix_ids: ``(W, S)`` the same ``W`` suffixes for every row, each ending with EOS (read there).
    """
    hidden, _, _ = _run_suffixes(clip, cache, suffix_ids, last_token_only=True)
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
            grown_keys[row, :, start : start + extra] = new_keys[row, :, 0]
            grown_values[row, :, start : start + extra] = new_values[row, :, 0]
        keys.append(grown_keys)
        values.append(grown_values)
    return PrefixCache(keys, values, cache.lengths + extra)
