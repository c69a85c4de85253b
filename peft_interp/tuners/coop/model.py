"""CoOp as a PEFT tuner: learnt context vectors in front of CLIP's class names."""

from __future__ import annotations

from ..clip_prompt.model import ClipPromptTuner


class CoOpModel(ClipPromptTuner):
    """Context Optimisation on a ``CLIPModel``: everything is the shared CLIP prompt core with its defaults.

    Example:

        ```py
        >>> import torch
        >>> from transformers import CLIPConfig, CLIPModel
        >>> from peft import get_peft_model
        >>> from peft_interp import CoOpConfig

        >>> clip = CLIPModel(CLIPConfig(
        ...     text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2),
        ...     vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        ...                        image_size=32, patch_size=8), projection_dim=16))
        >>> model = get_peft_model(clip, CoOpConfig(class_names=["cat", "dog", "red bird"]))
        >>> out = model(pixel_values=torch.randn(2, 3, 32, 32), labels=torch.tensor([0, 2]))
        >>> out.logits.shape
        torch.Size([2, 3])
        >>> model.set_class_names(["fox", "owl"])  # novel classes, no retraining
        >>> model(pixel_values=torch.randn(2, 3, 32, 32)).logits.shape
        torch.Size([2, 2])
        >>> model.decode_context().prompt  # the nearest token of every context vector
        'a photo of a {}.'

        ```
    """

    prefix = "coop_"

    def explanation_metadata(self, adapter_name: str | None = None) -> dict:
        """Class names, template, and the (shared) context read as words: the nearest whole words (short ones
        included) with their cosine similarity, and the nearest tokens of the whole vocabulary."""
        adapter_name = adapter_name or self.active_adapters[0]
        config = self.peft_config[adapter_name]
        metadata = {**super().explanation_metadata(adapter_name), "template": config.template}
        prompt = self.prompt_explanation(adapter_name)
        if prompt.readable is not None:
            metadata["readable_prompt"] = prompt.readable.prompt
            metadata["context_tokens"] = prompt.readable.tokens
            metadata["context_similarities"] = prompt.readable.similarities.tolist()
            metadata["context_distances"] = prompt.readable.distances.tolist()
            metadata["nearest_tokens"] = prompt.nearest.tokens
        else:
            metadata["class_prompts"] = prompt.class_prompts
        return metadata
