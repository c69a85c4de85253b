"""Deep vision-language prompts in both CLIP towers (MaPLe; also PromptSRC's independent V-L prompts).

Prompts enter the towers as in the official MaPLe code (github.com/muzairkhattak/multimodal-prompt-learning,
``clip/model.py``), with depth ``J``:

* text: the context vectors ``v`` replace the soft token embeddings of the prompt (the shared core's
  :class:`~peft_interp.tuners.layers.ContextEmbedding`); at the input of text blocks ``1 .. J - 1`` the hidden
  states at those soft positions are replaced by that block's own prompts ``(n, D)``;
* vision: ``n_v`` prompt tokens ``(n_v, W)`` are appended after the position-embedded patch tokens (before
  ``pre_layrnorm``); at the input of vision blocks ``1 .. J - 1`` the last ``n_v`` hidden states are replaced by
  that block's own prompts. After block ``J - 1`` the prompt tokens travel on unchanged; the image feature is still
  read from the CLS token.

The prompts are passed in for one call of a tower: :func:`deep_text_prompts` and :func:`deep_vision_prompts`
install forward hooks for the duration of a ``with`` block and remove them afterwards, so the towers are untouched
outside it (and with the adapter disabled).

Shapes: ``D`` = text width (512 for ViT-B/16), ``W`` = vision width (768), ``n`` = text prompt tokens,
``n_v`` = vision prompt tokens, ``J`` = prompt depth, ``R`` = prompt rows, ``T`` = prompt length.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager

import torch
from torch import nn


def _replace_hidden_states(hook):
    """A forward pre-hook (``with_kwargs=True``) that maps the block's ``hidden_states`` with ``hook``."""

    def pre_hook(module, args, kwargs):
        if args:
            return (hook(args[0]), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": hook(kwargs["hidden_states"])}

    return pre_hook


@contextmanager
def deep_text_prompts(blocks: nn.ModuleList, prompts: torch.Tensor, soft_mask: torch.Tensor):
    """Within this block, text block ``j`` (``1 <= j < J``) gets ``prompts[j - 1]`` at the soft positions.

    Args:
        blocks: the text encoder's blocks (``text_model.encoder.layers``).
        prompts: ``(J - 1, n, D)``.
        soft_mask: ``(R, T)``, ``n`` True positions per row (where the context vectors are).
    """
    handles = []

    def replacer(prompt: torch.Tensor):
        def replace(hidden: torch.Tensor) -> torch.Tensor:  # (R, T, D)
            source = prompt.to(hidden.dtype).expand(hidden.shape[0], -1, -1)  # (R, n, D)
            return hidden.masked_scatter(soft_mask.unsqueeze(-1), source)

        return replace

    try:
        for depth, prompt in enumerate(prompts, start=1):
            hook = _replace_hidden_states(replacer(prompt))
            handles.append(blocks[depth].register_forward_pre_hook(hook, with_kwargs=True))
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def deep_vision_prompts(embeddings: nn.Module, blocks: nn.ModuleList, prompts: torch.Tensor):
    """Within this block, ``prompts[0]`` is appended to the vision embeddings and block ``j`` (``1 <= j < J``)
    gets ``prompts[j]`` in place of the last ``n_v`` tokens.

    Args:
        embeddings: ``vision_model.embeddings`` (output ``(B, 1 + L, W)``).
        blocks: ``vision_model.encoder.layers``.
        prompts: ``(J, n_v, W)``.
    """
    num_tokens = prompts.shape[1]

    def append(module, args, output: torch.Tensor) -> torch.Tensor:  # (B, 1 + L, W) -> (B, 1 + L + n_v, W)
        return torch.cat([output, prompts[0].to(output.dtype).expand(output.shape[0], -1, -1)], dim=1)

    def replacer(prompt: torch.Tensor):
        def replace(hidden: torch.Tensor) -> torch.Tensor:  # (B, 1 + L + n_v, W)
            source = prompt.to(hidden.dtype).expand(hidden.shape[0], -1, -1)
            return torch.cat([hidden[:, :-num_tokens], source], dim=1)

        return replace

    handles = []
    try:
        handles.append(embeddings.register_forward_hook(append))
        for depth in range(1, len(prompts)):
            hook = _replace_hidden_states(replacer(prompts[depth]))
            handles.append(blocks[depth].register_forward_pre_hook(hook, with_kwargs=True))
        yield
    finally:
        for handle in handles:
            handle.remove()


class CoupledPrompts(nn.Module):
    """MaPLe's prompts besides the input context: deep text prompts and the coupling functions.

    The vision prompts of depth ``j`` are a linear function of the text prompts of the same depth,
    ``P_j = F_j(T_j) = T_j A_j^T + b_j`` (``F_j: R^D -> R^W``), where ``T_0`` is the input context ``v`` and
    ``T_1 .. T_{J-1}`` the deep text prompts. Only the text prompts and the ``F_j`` are learnt; the vision side
    has no prompt parameter of its own. As in the official code, the deep text prompts start from N(0, 0.02) and
    ``F_1 .. F_{J-1}`` start as copies of one randomly initialised linear map (``F_0`` has its own).

    Args:
        num_tokens: ``n``.
        text_width: ``D``.
        vision_width: ``W``.
        depth: ``J >= 1``.
    """

    def __init__(self, num_tokens: int, text_width: int, vision_width: int, depth: int) -> None:
        super().__init__()
        self.deep_text = nn.Parameter(torch.randn(depth - 1, num_tokens, text_width) * 0.02)  # (J - 1, n, D)
        deep_coupling = nn.Linear(text_width, vision_width)
        self.coupling = nn.ModuleList(
            [nn.Linear(text_width, vision_width)] + [copy.deepcopy(deep_coupling) for _ in range(depth - 1)]
        )

    def vision_prompts(self, context: torch.Tensor) -> torch.Tensor:
        """``(n, D)`` input context -> ``(J, n, W)`` vision prompts ``F_j(T_j)``."""
        text = [context] + list(self.deep_text)
        return torch.stack([coupling(prompt.to(coupling.weight.dtype)) for coupling, prompt in zip(self.coupling, text)])
