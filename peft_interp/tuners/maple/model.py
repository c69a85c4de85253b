"""MaPLe as a PEFT tuner, on a base shared with PromptSRC: CLIP with deep prompts in both towers."""

from __future__ import annotations


import torch
import torch.nn.functional as F
from transformers import CLIPModel

from ..clip_prompt.config import ClipPromptConfig
from ..clip_prompt.prompts import PromptBatch, Segment
from ..coop.model import CoOpModel
from ..recipe import COOP_RECIPE, TrainingRecipe
from .config import MaPLeConfig
from .layer import CoupledPrompts, deep_text_prompts, deep_vision_prompts

# MaPLe's base-to-novel run (configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml of the official code).
MAPLE_RECIPE = COOP_RECIPE.override(
    learning_rate=0.0035, epochs=5, batch_size=4, source="MaPLe (Khattak et al. 2023), vit_b16_c2_ep5_batch4_2ctx"
)


class DeepPromptTuner(CoOpModel):
    """Shared base of MaPLe and PromptSRC: the core's prompt ``[SOS] v_1 .. v_n [fixed words] <class>. [EOS]``
    plus deep text prompts and vision prompts (see :mod:`peft_interp.tuners.maple.layer`).

    A subclass says where its prompts come from: :meth:`deep_text_prompts` ``(J_t - 1, n, D)`` and
    :meth:`vision_prompts` ``(J_v, n_v, W)``. The image tower is prompted, so image features are computed with
    autograd and from pixels only; with the adapter disabled both towers run unprompted (zero-shot CLIP).
    """

    prompts_image_tower = True  # forward refuses precomputed image_embeds while the adapter is active

    def deep_text_prompts(self, adapter_name: str) -> torch.Tensor:
        """``(J_t - 1, n, D)``: the text prompts of blocks ``1 .. J_t - 1`` (set by the subclass)."""
        raise NotImplementedError

    def vision_prompts(self, adapter_name: str) -> torch.Tensor:
        """``(J_v, n_v, W)``: the vision prompts of the input and blocks ``1 .. J_v - 1`` (set by the subclass)."""
        raise NotImplementedError

    @staticmethod
    def check_depth(model: CLIPModel, text_depth: int, vision_depth: int, names: tuple[str, str]) -> None:
        """Refuse depths beyond the towers' block counts, naming the config fields."""
        towers = (("text", text_depth, model.config.text_config), ("vision", vision_depth, model.config.vision_config))
        for name, (tower_name, depth, tower) in zip(names, towers):
            if depth > tower.num_hidden_layers:
                raise ValueError(
                    f"`{name}`={depth} exceeds the {tower.num_hidden_layers} blocks of the CLIP {tower_name} tower: "
                    f"set it to at most {tower.num_hidden_layers}."
                )

    # ------------------------------------------------------------------------------------------ input prompt
    def _split_context_init(self, config: ClipPromptConfig) -> tuple[list[int], str]:
        """Token ids of the first ``n`` words of ``context_init`` and the remaining words (fixed in the prompt)."""
        key = (config.tokenizer_name_or_path, config.context_init, config.num_context_tokens)
        cache = self.__dict__.setdefault("_context_init_split", {})
        if key not in cache:
            adapter_name = next((name for name, other in self.peft_config.items() if other is config), None)
            tokenizer = self.tokenizer(adapter_name)
            ids = tokenizer.encode(config.context_init, add_special_tokens=False)
            count = config.num_context_tokens
            if len(ids) < count:
                raise ValueError(
                    f"`context_init`={config.context_init!r} is {len(ids)} tokens but `num_context_tokens` is {count}: "
                    f"give words of at least {count} tokens, or None."
                )
            rest = tokenizer.decode(ids[count:]).strip() if len(ids) > count else ""
            if rest and tokenizer.encode(rest, add_special_tokens=False) != ids[count:]:
                raise ValueError(
                    f"`context_init`={config.context_init!r} cannot be split after {count} tokens at a word boundary: "
                    "change `num_context_tokens` or the words."
                )
            cache[key] = (ids[:count], rest)
        return cache[key]

    def _initial_context(self, config: ClipPromptConfig, adapter_name: str) -> torch.Tensor:
        """``(n, D)``: the first ``n`` token embeddings of ``context_init``, or N(0, 0.02)."""
        if not config.context_init:
            return super()._initial_context(config, adapter_name)
        ids, _ = self._split_context_init(config)
        return self.model.get_submodule("text_model.embeddings.token_embedding").weight[ids].detach().float().clone()

    def _prompt_layout(self, config: ClipPromptConfig, class_name: str) -> list[Segment]:
        """``[n, "<fixed words> <class>."]``."""
        rest = self._split_context_init(config)[1] if config.context_init else ""
        return [config.num_context_tokens, f"{rest} {class_name}." if rest else f"{class_name}."]

    def _decoding(self, adapter_name: str, context: torch.Tensor, token_ids: torch.Tensor):
        """As the core's, with the fixed words of ``context_init`` between the context and the class name."""
        decoding = super()._decoding(adapter_name, context, token_ids)
        config = self.peft_config[adapter_name]
        rest = self._split_context_init(config)[1] if config.context_init else ""
        if rest:
            decoding.prompt = f"{decoding.prompt[: -len(' {}.')]} {rest} {{}}."
        return decoding

    # ----------------------------------------------------------------------------------------------- towers
    def encode_text(self, prompts: PromptBatch, context: torch.Tensor | None = None) -> torch.Tensor:
        """As the core's; learnt prompts (``context`` given) also get the deep text prompts."""
        if context is None:
            return super().encode_text(prompts, context)
        adapter_name = self.active_adapters[0]
        deep = self.deep_text_prompts(adapter_name)
        mask = self._deep_prompt_mask(prompts, self.peft_config[adapter_name])
        with deep_text_prompts(self.model.text_model.encoder.layers, deep, mask):
            return super().encode_text(prompts, context)

    def _deep_context_rows(self, config: ClipPromptConfig) -> slice:
        """The rows of the ``(M, D)`` input context whose positions the deep text prompts take over in blocks
        ``1 .. J - 1`` (MaPLe's coupling ``F_0`` reads the same rows): all ``M`` here, so the deep prompts are
        ``(J - 1, M, D)``. IPL's hybrid prompt narrows them to its class context ``P``."""
        return slice(0, config.num_context_tokens)

    def _num_deep_text_tokens(self, config: ClipPromptConfig) -> int:
        """``n``, the text prompt tokens per deep block: the size of :meth:`_deep_context_rows`."""
        return len(range(config.num_context_tokens)[self._deep_context_rows(config)])

    def _deep_prompt_mask(self, prompts: PromptBatch, config: ClipPromptConfig) -> torch.Tensor:
        """``(R, T)`` positions whose hidden states the deep text prompts replace: the soft positions of the context
        rows :meth:`_deep_context_rows` (``n`` per row; the first ``M`` soft positions of a row are its context, in
        order)."""
        rows = self._deep_context_rows(config)
        rank = prompts.soft_mask.cumsum(dim=1) - 1  # (R, T) index of each soft position among its row's
        return prompts.soft_mask & (rank >= rows.start) & (rank < rows.stop)

    def encode_image(self, pixel_values: torch.Tensor, use_cache: bool = False) -> torch.Tensor:
        """Normalised image features ``(B, P)`` of the prompted image tower (frozen and unprompted when the adapter
        is disabled)."""
        adapter_name = self.active_adapter_in_use()
        if adapter_name is None:
            return super().encode_image(pixel_values, use_cache)
        vision = self.model.vision_model
        with deep_vision_prompts(vision.embeddings, vision.encoder.layers, self.vision_prompts(adapter_name)):
            features = self.model.get_image_features(pixel_values=pixel_values).pooler_output
        return F.normalize(features, dim=-1)

    def frozen_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``(B, P)`` normalised features of the unprompted image tower (zero-shot CLIP), without autograd."""
        return super().encode_image(pixel_values, use_cache=False)


class MaPLeModel(DeepPromptTuner):
    """Multi-modal Prompt Learning on a ``CLIPModel``: deep text prompts, vision prompts coupled to them.

    Learnt: the input context ``v`` ``(n, D)`` (in the token-embedding wrapper), the deep text prompts
    ``(J - 1, n, D)`` and the ``J`` coupling functions (in the shared module dict ``maple_prompts``).

    Example:

        ```py
        >>> import torch
        >>> from transformers import CLIPConfig, CLIPModel
        >>> from peft import get_peft_model
        >>> from peft_interp import MaPLeConfig

        >>> clip = CLIPModel(CLIPConfig(
        ...     text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2),
        ...     vision_config=dict(hidden_size=48, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        ...                        image_size=32, patch_size=8), projection_dim=16))
        >>> model = get_peft_model(clip, MaPLeConfig(class_names=["cat", "dog", "red bird"], prompt_depth=2))
        >>> out = model(pixel_values=torch.randn(2, 3, 32, 32), labels=torch.tensor([0, 2]))
        >>> out.logits.shape
        torch.Size([2, 3])
        >>> model.base_model.vision_prompts("default").shape  # J x n x vision width, a function of the text prompts
        torch.Size([2, 2, 48])
        >>> model.base_model.decode_context().prompt  # "a photo" learnt, "of a" fixed
        'a photo of a {}.'

        ```
    """

    prefix = "maple_"
    shared_module_names = ("maple_prompts",)

    def _adapter_modules(self, model, config: MaPLeConfig, adapter_name: str):
        """The core's token embedding and the deep text prompts and coupling functions as a shared module."""
        if not isinstance(model, CLIPModel):
            return super()._adapter_modules(model, config, adapter_name)  # raises a clear error
        self.check_depth(model, config.prompt_depth, config.prompt_depth, ("prompt_depth", "prompt_depth"))
        prompts = CoupledPrompts(
            self._num_deep_text_tokens(config), model.config.text_config.hidden_size,
            model.config.vision_config.hidden_size, config.prompt_depth,
        )  # fmt: skip
        layers, shared = super()._adapter_modules(model, config, adapter_name)
        return layers, {**shared, "maple_prompts": prompts}

    def deep_text_prompts(self, adapter_name: str) -> torch.Tensor:
        """``(J - 1, n, D)``."""
        return self.maple_prompts[adapter_name].deep_text

    def vision_prompts(self, adapter_name: str) -> torch.Tensor:
        """``(J, n, W)``: the coupling functions applied to the text prompts of each depth (at the input: the
        context rows the deep prompts take over, :meth:`_deep_context_rows`)."""
        rows = self._deep_context_rows(self.peft_config[adapter_name])
        return self.maple_prompts[adapter_name].vision_prompts(self.context_layer.context[adapter_name][rows])

    def training_recipe(self) -> TrainingRecipe:
        """SGD lr 0.0035, cosine, 1 warm-up epoch at 1e-5, batch 4, 5 epochs (the paper's base-to-novel run)."""
        return MAPLE_RECIPE.override(learning_rate=self.peft_config[self.active_adapters[0]].learning_rate)
