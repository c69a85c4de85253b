"""Interpretability metrics of learnt CLIP prompts.

Prompt readability and faithfulness, for CLIP text-prompt tuners (CoOp, IPL, ...):

* :func:`prompt_readability` — how close a learnt context is to readable words: the share of context vectors whose
  nearest token in the *whole* vocabulary is a readable word (a whole-word, alphabetic, non-stop-word token; see
  :mod:`peft_interp.tuners.clip_prompt.vocabulary`), and the mean cosine similarity of each vector to its nearest
  readable word. 1.0 / 1.0 means the context *is* a sentence of words.
* :func:`decoded_prompt_faithfulness` — does the readable prompt say what the model does? Accuracy when the
  continuous context is replaced by the embeddings of its decoded words, divided by the accuracy of the continuous
  context (1.0: the words carry the whole effect; the ratio can exceed 1). For IntCoOp-based models (IntCoOp, IPL
  with ``context_learner="intcoop"``) only the ``M`` shared context vectors are replaced; the image-conditioned
  parts (attention offsets, attribute slot, prompted image features) are recomputed by the learnt modules.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def _tuner(model):
    """The tuner of a ``PeftModel``, or ``model`` itself when it is the tuner."""
    from peft import PeftModel

    return model.base_model if isinstance(model, PeftModel) else model


@dataclass
class PromptReadability:
    readable_fraction: float  # share of context vectors whose nearest vocabulary token is a readable word
    mean_similarity: float  # mean cosine similarity of each vector to its nearest readable word
    nearest_tokens: list[str]  # nearest token (whole vocabulary) of each vector


@torch.no_grad()
def prompt_readability(model, adapter_name: str | None = None) -> PromptReadability:
    """Readability of the shared context of a CLIP prompt tuner (a ``PeftModel`` or its tuner)."""
    tuner = _tuner(model)
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
    nearest readable words of the context (CoOp, IntCoOp). IPL's hybrid prompt (``[SOS] A_1 w_1 .. A_K w_K P
    <class>. [EOS]``) keeps its selected words ``w_k`` (fixed tokens of the prompts, read by both runs) and replaces
    only the ``M`` learnt vectors by their nearest readable words; the decoded prompt reads
    ``"[a] [b] w_1 [c] [d] w_2 [e] [f] {}."`` (``[x]``: the word replacing a learnt vector).

    CoOp layout (``[SOS] v_1 .. v_M <class>. [EOS]``, the ``M`` soft positions are the context): the class prompts
    are encoded once with the context, once with the words' embeddings, against the frozen image features.

    IntCoOp layout (``[SOS] v_1(x) .. v_M(x) A(x) <class>. [EOS]``, ``M + 1`` soft positions, built per image): the
    model's own forward runs twice, the second time with the shared context vectors ``v_1 .. v_M`` replaced by the
    words' embeddings wherever IntCoOp uses them (the residual ``v_i + MHA_i`` and the attention's queries). The
    image-conditioned parts are not decoded: the attention offsets, the attribute slot ``A(x)`` and the (prompted)
    image features are recomputed by the learnt modules, as they would be for a model whose context *is* the words.
    The decoded prompt reads ``"w_1 .. w_M [attribute] {}."``. ``adapter_name`` must then be the active adapter.

    CoCoOp (``v_i + pi(x)``, built per image) runs its forward twice the same way: the meta-net bias ``pi(x)`` stays
    continuous, the shared ``v_i`` are replaced by the words' embeddings.

    Any other layout (soft positions that are not the ``M`` context vectors) raises a ``ValueError``.
    """
    from .tuners.cocoop.model import CoCoOpModel
    from .tuners.intcoop.model import IntCoOpModel

    tuner = _tuner(model)
    adapter_name = adapter_name or tuner.active_adapters[0]
    if hasattr(tuner, "explain_prompt"):
        decoding = tuner.explain_prompt(adapter_name)
    else:
        decoding = tuner.decode_context(adapter_name, candidate_ids=tuner.readable_vocabulary(adapter_name))
    context = tuner.context_layer.context[adapter_name]
    words = tuner.context_layer.weight[decoding.token_ids].to(context.dtype)
    labels = labels.to(context.device)

    if isinstance(tuner, (IntCoOpModel, CoCoOpModel)):  # image-conditioned prompts, built by the forward
        if adapter_name != tuner.active_adapters[0]:
            raise ValueError(
                f"{type(tuner).__name__} prompts are built by the model's forward, which runs the active adapter "
                f"{tuner.active_adapters[0]!r}: call model.set_adapter({adapter_name!r}) first."
            )
        saved = context.detach().clone()

        def accuracy(values: torch.Tensor) -> float:
            context.copy_(values)  # the shared context everywhere IntCoOp reads it; restored below
            logits = tuner(pixel_values=pixel_values).logits
            return (logits.argmax(dim=-1) == labels).float().mean().item()

        try:
            continuous, decoded = accuracy(saved), accuracy(words)
        finally:
            context.copy_(saved)
        if getattr(decoding, "decoded_prompt", ""):  # IPL's hybrid prompt: the words in their slots
            prompt = decoding.decoded_prompt
        elif isinstance(tuner, CoCoOpModel):
            prompt = decoding.prompt
        else:
            prompt = " ".join(decoding.tokens) + " [attribute] {}."
        return PromptFaithfulness(continuous, decoded, decoded / continuous if continuous else float("nan"), prompt)

    num_soft = int(tuner.prompts(adapter_name).soft_mask[0].sum())
    if num_soft != context.shape[-2]:
        raise ValueError(
            f"decoded_prompt_faithfulness decodes the {context.shape[-2]} context vectors of a CoOp-style prompt, but "
            f"{type(tuner).__name__}'s prompts have {num_soft} soft positions: the others are not context vectors "
            "with words to decode, and this layout is not supported."
        )
    image_embeds = tuner.encode_image(pixel_values)
    num_classes = len(tuner.peft_config[adapter_name].class_names)

    def accuracy(ctx: torch.Tensor) -> float:
        text = tuner._encode_classes(adapter_name, ctx.expand(num_classes, -1, -1))
        logits = image_embeds @ text.T
        return (logits.argmax(dim=-1) == labels).float().mean().item()

    continuous, decoded = accuracy(context), accuracy(words)
    prompt = getattr(decoding, "decoded_prompt", "") or decoding.prompt  # hybrid: "* *" would hide the decoding
    return PromptFaithfulness(continuous, decoded, decoded / continuous if continuous else float("nan"), prompt)
