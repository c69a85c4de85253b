"""Configuration of IPL, interpretable prompt learning by readable-token selection."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Literal, Optional

from ..clip_prompt.config import ClipPromptConfig
from ..intcoop.config import IntCoOpConfig

CONTEXT_LEARNERS = ("coop", "intcoop")
PROMPT_FIELDS = frozenset(f.name for f in fields(ClipPromptConfig))  # shared by every context learner
INTCOOP_SETTINGS = tuple(f.name for f in fields(IntCoOpConfig) if f.name not in PROMPT_FIELDS)


@dataclass
class IPLConfig(ClipPromptConfig):
    """Configuration of :class:`~peft_interp.IPLModel` (Wang et al., "Joint Semantic Token Selection and Prompt
    Optimization for Interpretable Prompt Learning", 2026).

    IPL alternates continuous prompt tuning with a discrete step that picks human-readable, diverse vocabulary
    tokens for the learnt context, so that the prompt can be read. Only the paper's abstract was available; the
    choices below are ours and explicit (see ``shared/specs/ipl.md`` section 5 for the alternatives):

    * Selection (:mod:`peft_interp.tuners.ipl.selection`): greedy maximisation of a facility-location relevance
      (each context vector represented by its most similar selected token, cosine similarity in CLIP's
      token-embedding space) minus ``redundancy_weight`` times each new token's similarity to those chosen
      before it. It scores the current continuous context, so the words follow what the prompt learnt, and it
      runs on precomputed token embeddings in milliseconds (instead of ``|V| x C`` text-encoder passes).
    * Coupling: each context position is assigned its most similar selected token, and ``anchor_weight`` times the
      mean squared distance between the vectors and their tokens is added to the loss, pulling the continuous
      context toward readable words (so that the readable prompt stays faithful).
    * Schedule: selection every ``selection_interval`` training steps, starting at step 0 (trainers call
      ``on_train_step_begin``); the assignment in force is saved with the adapter.
    * Context learner (``context_learner``): IPL plugs into the prompt learner whose context it makes readable.
      ``"coop"``: CoOp's shared context, loss = CE + anchor. ``"intcoop"``: IntCoOp's prompt
      ``[SOS] v_1(x) .. v_M(x) A(x) <class>. [EOS]`` with ``v_i(x) = v_i + MHA_i(x)``
      (:class:`~peft_interp.IntCoOpConfig`), loss = IntCoOp's own terms + anchor. The spec leaves open which part
      of an image-conditioned context the words stand for (``shared/specs/ipl.md`` 2.6 only says the CoCoOp
      meta-net bias is added to the soft tokens, not to the anchors); our choice: IPL selects words for, and
      anchors, the *shared* vectors ``v_i``, while the image-dependent offset ``MHA_i(x)`` and the attribute slot
      ``A(x)`` stay continuous. The readable prompt is then ``"w_1 .. w_M [attribute] {}."``, ``[attribute]``
      standing for the per-image word IntCoOp's ``explain`` reads from ``A(x)``.

    Args:
        class_names, template, num_context_tokens, context_init, class_specific_context, cache_image_features,
        tokenizer_name_or_path: see :class:`~peft_interp.tuners.clip_prompt.ClipPromptConfig`. The context must be
            shared (not class-specific).
        context_learner (`str`): Which prompt learner IPL makes readable: ``"coop"`` (default) or ``"intcoop"``
            (see above).
        intcoop (`dict`, *optional*): With ``context_learner="intcoop"``: IntCoOp's own settings, as keyword
            arguments of :class:`~peft_interp.IntCoOpConfig` other than the prompt fields above (e.g.
            ``{"visual_prompt_depth": 2, "regularization_weight": 4.0}``); the rest keep IntCoOp's defaults. They
            are validated by IntCoOp's rules and each becomes an attribute of this config
            (``config.visual_prompt_depth``), which is how the IntCoOp prompt learner reads them. Only the
            overrides are saved, so a reloaded adapter gets the same settings.
        num_selected_tokens (`int`, *optional*): Size ``k`` of the selected set; ``None`` = ``num_context_tokens``.
        redundancy_weight (`float`): ``gamma`` of the diversity penalty; 0.1 as in IPL's reference trainer.
        anchor_weight (`float`): Weight of the pull of each context vector toward its token; default 1.
        selection_interval (`int`): Training steps between two selections; default 50.
        min_word_length, max_word_length (`int`): Candidate words' length range; default 3-15 letters.
        exclude_class_name_words (`bool`): Keep words of the class names out of the candidates (no class-name
            leakage into the prompt); default True.
        excluded_words (`list[str]`): More words to exclude.
        readable_prompt (`str`, *optional*): Filled in by the tuner after each selection: the decoded prompt.
    """

    method_name = "ipl"

    context_learner: Literal["coop", "intcoop"] = "coop"
    intcoop: Optional[dict] = None
    num_selected_tokens: Optional[int] = None
    redundancy_weight: float = 0.1
    anchor_weight: float = 1.0
    selection_interval: int = 50
    min_word_length: int = 3
    max_word_length: int = 15
    exclude_class_name_words: bool = True
    excluded_words: list[str] = field(default_factory=list)
    readable_prompt: Optional[str] = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.context_learner not in CONTEXT_LEARNERS:
            raise ValueError(f"`context_learner` must be one of {list(CONTEXT_LEARNERS)}, got {self.context_learner!r}.")
        if self.context_learner == "intcoop":
            for name, value in self._intcoop_settings().items():
                setattr(self, name, value)
        elif self.intcoop is not None:
            raise ValueError(f"`intcoop` settings need `context_learner='intcoop'`, got {self.context_learner!r}.")
        if self.class_specific_context:
            raise ValueError("`class_specific_context` must be False for IPL: it reads one shared context.")
        if self.num_selected_tokens is not None and self.num_selected_tokens < 1:
            raise ValueError(f"`num_selected_tokens` must be a positive int or None, got {self.num_selected_tokens}.")
        if self.selection_interval < 1:
            raise ValueError(f"`selection_interval` must be >= 1, got {self.selection_interval}.")
        if self.redundancy_weight < 0 or self.anchor_weight < 0:
            raise ValueError("`redundancy_weight` and `anchor_weight` must be >= 0.")
        if not 1 <= self.min_word_length <= self.max_word_length:
            raise ValueError(
                f"`min_word_length` / `max_word_length` must satisfy 1 <= min <= max, got "
                f"{self.min_word_length} / {self.max_word_length}."
            )

    def _intcoop_settings(self) -> dict:
        """IntCoOp's settings: its defaults updated with ``intcoop``, validated by :class:`IntCoOpConfig`."""
        overrides = dict(self.intcoop or {})
        shared = sorted(set(overrides) & PROMPT_FIELDS)
        if shared:
            raise ValueError(f"`intcoop` must not set the prompt fields {shared}: set them on IPLConfig itself.")
        unknown = sorted(set(overrides) - set(INTCOOP_SETTINGS))
        if unknown:
            raise ValueError(f"`intcoop` has unknown settings {unknown}; valid ones: {list(INTCOOP_SETTINGS)}.")
        prompt = {name: getattr(self, name) for name in ("class_names", "template", "num_context_tokens",
                                                         "context_init", "cache_image_features")}  # fmt: skip
        try:
            resolved = IntCoOpConfig(**prompt, **overrides)
        except ValueError as error:
            raise ValueError(f"IPLConfig with context_learner='intcoop': {error}") from None
        return {name: getattr(resolved, name) for name in INTCOOP_SETTINGS}
