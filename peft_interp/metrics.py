"""Interpretability metrics.

Prompt readability and faithfulness, for CLIP text-prompt tuners (CoOp, IPL, ...):

* :func:`prompt_readability` — how close a learnt context is to readable words: the share of context vectors whose
  nearest token in the *whole* vocabulary is a readable word (a whole-word, alphabetic, non-stop-word token; see
  :mod:`peft_interp.tuners.clip_prompt.vocabulary`), and the mean cosine similarity of each vector to its nearest
  readable word. 1.0 / 1.0 means the context *is* a sentence of words.
* :func:`decoded_prompt_faithfulness` — does the readable prompt say what the model does? Accuracy when the
  continuous context is replaced by the embeddings of its decoded words, divided by the accuracy of the continuous
  context (1.0: the words carry the whole effect; the ratio can exceed 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class PromptReadability:
    readable_fraction: float  # share of context vectors whose nearest vocabulary token is a readable word
    mean_similarity: float  # mean cosine similarity of each vector to its nearest readable word
    nearest_tokens: list[str]  # nearest token (whole vocabulary) of each vector


@torch.no_grad()
def prompt_readability(model, adapter_name: str | None = None) -> PromptReadability:
    """Readability of the shared context of a CLIP prompt tuner (a ``PeftModel`` or its tuner)."""
    tuner = getattr(model, "base_model", model)
    readable = tuner.readable_vocabulary(adapter_name)
    nearest = tuner.decode_context(adapter_name)  # over the whole vocabulary
    is_readable = torch.isin(nearest.token_ids, readable.to(nearest.token_ids.device))
    context = tuner.context_layer.context[adapter_name or tuner.active_adapters[0]].float()
    table = F.normalize(tuner.context_layer.weight[readable.to(context.device)].float(), dim=-1)
    best_cosine = (F.normalize(context, dim=-1) @ table.T).max(dim=-1).values
    return PromptReadability(
        readable_fraction=is_readable.float().mean().item(),
        mean_similarity=best_cosine.mean().item(),
        nearest_tokens=nearest.tokens,
    )


@dataclass
class PromptFaithfulness:
    continuous_accuracy: float
    decoded_accuracy: float
    ratio: float  # decoded / continuous
    decoded_prompt: str


@torch.no_grad()
def decoded_prompt_faithfulness(
    model, pixel_values: torch.Tensor, labels: torch.Tensor, adapter_name: str | None = None
) -> PromptFaithfulness:
    """Accuracy of the decoded (readable) prompt relative to the learnt continuous one, on ``(pixel_values, labels)``.

    The decoded prompt is the tuner's own readable prompt when it has one (IPL's ``explain_prompt``), else the
    nearest readable words of the context (CoOp).
    """
    tuner = getattr(model, "base_model", model)
    adapter_name = adapter_name or tuner.active_adapters[0]
    if hasattr(tuner, "explain_prompt"):
        decoding = tuner.explain_prompt(adapter_name)
    else:
        decoding = tuner.decode_context(adapter_name, candidate_ids=tuner.readable_vocabulary(adapter_name))
    image_embeds = tuner.encode_image(pixel_values)
    num_classes = len(tuner.peft_config[adapter_name].class_names)
    context = tuner.context_layer.context[adapter_name]
    words = tuner.context_layer.weight[decoding.token_ids].to(context.dtype)

    def accuracy(ctx: torch.Tensor) -> float:
        text = tuner._encode_classes(adapter_name, ctx.expand(num_classes, -1, -1))
        logits = image_embeds @ text.T
        return (logits.argmax(dim=-1) == labels.to(logits.device)).float().mean().item()

    continuous, decoded = accuracy(context), accuracy(words)
    return PromptFaithfulness(continuous, decoded, decoded / continuous if continuous else float("nan"), decoding.prompt)
