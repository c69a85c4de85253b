"""Configuration of IPL, interpretable prompt learning: a hybrid prompt of selected words and learnt vectors."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Literal, Optional

from ..clip_prompt.config import ClipPromptConfig
from ..intcoop.config import IntCoOpConfig

VARIANTS = ("hybrid", "coverage_anchor")
PROMPT_FIELDS = frozenset(f.name for f in fields(ClipPromptConfig))  # shared by every context learner
# context learner name -> its config class (more are added by `peft_interp.tuners.ipl.register_context_learner`)
LEARNER_CONFIGS: dict[str, Optional[type]] = {"coop": None, "intcoop": IntCoOpConfig}


def learner_setting_names(config_cls: Optional[type]) -> tuple[str, ...]:
    """The fields of a learner's config other than the prompt fields every CLIP prompt config has."""
    return () if config_cls is None else tuple(f.name for f in fields(config_cls) if f.name not in PROMPT_FIELDS)


INTCOOP_SETTINGS = learner_setting_names(IntCoOpConfig)


@dataclass
class IPLConfig(ClipPromptConfig):
    """Configuration of :class:`~peft_interp.IPLModel` (Wang et al., "Joint Semantic Token Selection and Prompt
    Optimization for Interpretable Prompt Learning", arXiv 2605.04425, 2026).

    Only the paper's abstract and third-party summaries were readable; the default (``variant="hybrid"``) follows
    the abstract (a *hybrid* prompt of human-readable tokens and continuous ones, a discrete selection step that is
    an approximate submodular optimisation, alternating with continuous tuning) and a public Dassl trainer that
    reads ``cfg.TRAINER.IPL.*`` (authorship unconfirmed; it builds on ATPrompt's anchored prompts, Li et al.,
    ICCV 2025). The prompt of class ``c`` is::

        [SOS] A_1 w_1 A_2 w_2 .. A_K w_K P <class c> . [EOS]

    * ``A_k``: ``tokens_per_word`` learnt vectors before word slot ``k`` (shared by all classes, init N(0, 0.01));
    * ``w_k``: the frozen CLIP token embedding of the ``k``-th selected word (the placeholder ``"0"`` until chosen);
    * ``P``: ``num_class_context_tokens`` learnt vectors before the class name (init N(0, 0.02)).

    The words are chosen one at a time, one every ``selection_block_epochs`` epochs (from epoch 0) until ``K``, and
    the learnt vectors train in between with the anchors fixed. A greedy step picks the candidate ``w`` minimising::

        L_rel(S + w) + redundancy_weight * mean_{u in S} cos(g("w"), g("u"))

    ``L_rel(S)``: cross-entropy over the training images' cached, un-augmented, normalised CLIP features of the
    discrete *probe* prompts ``"a photo of a {c}, with emphasis on: s_1, .., s_k"`` alone (``probe_template``; the
    learnt vectors do not enter it), ``g`` the frozen text tower. Novel classes reuse the same words. See
    :mod:`peft_interp.tuners.ipl.selection` for the speed-ups (key/value reuse, proxy pre-filter, lazy greedy).

    ``variant="coverage_anchor"`` is our earlier, cheaper reading, kept as an option: the words never enter the
    prompt; every ``selection_interval`` steps greedy facility-location selection (cosine coverage of the current
    context in token-embedding space, no image data) picks ``num_selected_tokens`` words, each context position is
    pulled toward its most similar word by ``anchor_weight`` times the squared distance.

    Context learner (``context_learner``): IPL plugs into the prompt learner whose soft context it splits: ``"coop"``
    (CoOp's shared context) or ``"intcoop"`` (IntCoOp's image-conditioned context ``v_i + MHA_i(x)`` and attribute
    slot ``A(x)``; the word slots interleave with the conditioned context, the attribute slot stays before the class
    name), ``"cocoop"``, ``"kgcoop"``, ``"maple"`` or ``"promptsrc"`` (their deep text prompts take over only the
    class context ``P`` in the deeper blocks; MaPLe couples ``P`` to its vision prompts), or any learner registered
    with :func:`peft_interp.tuners.ipl.register_context_learner`.

    Args:
        class_names, template, context_init, cache_image_features, tokenizer_name_or_path: see
            :class:`~peft_interp.tuners.clip_prompt.ClipPromptConfig`. The context must be shared.
        num_context_tokens (`int`, *optional*): Learnt vectors of the learner's context. ``None``: the hybrid total
            ``num_words * tokens_per_word + num_class_context_tokens`` (6 by default), or 4 (coverage_anchor).
            Given with ``variant="hybrid"`` it must equal that total.
        context_init (`str`, *optional*): ``None`` (default): hybrid draws ``A_k`` from N(0, 0.01) and ``P`` from
            N(0, 0.02) (the reference trainer); coverage_anchor draws every vector from N(0, 0.02).
        variant (`str`): ``"hybrid"`` (default) or ``"coverage_anchor"`` (see above).
        num_words (`int`): ``K``, word slots of the hybrid prompt (the reference trainer's ``NUM_SEL_STEPS``; ATPrompt
            uses 1-3 per dataset); 2.
        tokens_per_word (`int`): Learnt vectors ``A_k`` before each word slot; 2 (ATPrompt's CoOp setting).
        num_class_context_tokens (`int`): Learnt vectors ``P`` before the class name; 2.
        selection_block_epochs (`int`): Epochs between two greedy steps (``BLOCK_SIZE``); 1.
        probe_template (`str`): The discrete probe prompt before the words, with ``{}`` for the class name; the
            words follow, separated by commas. ``"a photo of a {}, with emphasis on:"``.
        placeholder_word (`str`): Fills an empty word slot; ``"0"`` as in the reference trainer. One token.
        vocabulary_size (`int`, *optional*): Keep the candidates with the lowest BPE ids (the most frequent merges):
            5000; ``None`` keeps all readable words (about 32,000).
        prefilter_size (`int`, *optional*): Score exactly only this many candidates, the best by a cheap proxy (the
            spread over classes of the cosine between ``g("w")`` and the current probe features); ``None``: score
            every candidate. 32: a greedy step then costs about 9 CPU seconds at CLIP-B/16 size with 100 classes
            (``benchmarks/ipl_selection_cost.py``), twice that at 64. The proxy is weak: on the shipped ConceptWorld
            CLIP (50 classes, 5000 candidates) the pick of the first two steps was never the exact best at any pool
            size from 8 to 256; its exact rank was 609 and 582 at 32, 217 and 582 at 64, 3 and 2 at 128, so 64
            does not earn its doubled cost.
        lazy_greedy (`bool`): From the second step on, re-score a candidate only while its previous gain (an upper
            bound when gains diminish) could still beat the best fresh one; True.
        lazy_batch_size (`int`): Candidates re-scored together by lazy greedy; 8.
        redundancy_weight (`float`): ``gamma`` of the diversity penalty; 0.1 as in the reference trainer.
        context_learner (`str`): ``"coop"`` (default), ``"intcoop"``, ``"cocoop"``, ``"kgcoop"``, ``"maple"``,
            ``"promptsrc"`` or a learner registered later.
        learner_settings (`dict`, *optional*): The learner's own settings (fields of its config other than the
            prompt fields above); each becomes an attribute of this config. Only the overrides are saved.
        intcoop (`dict`, *optional*): Same as ``learner_settings`` for ``context_learner="intcoop"`` (e.g.
            ``{"visual_prompt_depth": 2}``).
        num_selected_tokens, anchor_weight, selection_interval: ``variant="coverage_anchor"`` only: words picked
            (``None`` = ``num_context_tokens``), the pull's weight (1.0), steps between selections (50).
        min_word_length, max_word_length (`int`): Candidate words' length range; 3-15 letters.
        exclude_class_name_words (`bool`): Keep words of the class names out of the candidates; True.
        excluded_words (`list[str]`): More words to exclude.
        readable_prompt (`str`, *optional*): Filled in by the tuner after each selection.
    """

    method_name = "ipl"

    num_context_tokens: Optional[int] = None
    context_init: Optional[str] = None
    variant: Literal["hybrid", "coverage_anchor"] = "hybrid"
    num_words: int = 2
    tokens_per_word: int = 2
    num_class_context_tokens: int = 2
    selection_block_epochs: int = 1
    probe_template: str = "a photo of a {}, with emphasis on:"
    placeholder_word: str = "0"
    vocabulary_size: Optional[int] = 5000
    prefilter_size: Optional[int] = 32
    lazy_greedy: bool = True
    lazy_batch_size: int = 8
    redundancy_weight: float = 0.1
    context_learner: str = "coop"
    learner_settings: Optional[dict] = None
    intcoop: Optional[dict] = None
    num_selected_tokens: Optional[int] = None
    anchor_weight: float = 1.0
    selection_interval: int = 50
    min_word_length: int = 3
    max_word_length: int = 15
    exclude_class_name_words: bool = True
    excluded_words: list[str] = field(default_factory=list)
    readable_prompt: Optional[str] = None

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"`variant` must be one of {list(VARIANTS)}, got {self.variant!r}.")
        for name in ("num_words", "tokens_per_word", "num_class_context_tokens", "selection_block_epochs",
                     "lazy_batch_size"):  # fmt: skip
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"`{name}` must be a positive int, got {value!r}.")
        if self.variant == "hybrid":
            total = self.num_words * self.tokens_per_word + self.num_class_context_tokens
            if self.num_context_tokens is None:
                self.num_context_tokens = total
            elif self.num_context_tokens != total:
                raise ValueError(
                    f"`num_context_tokens`={self.num_context_tokens} but the hybrid prompt has num_words x "
                    f"tokens_per_word + num_class_context_tokens = {total} learnt vectors: leave it None or set {total}."
                )
        elif self.num_context_tokens is None:
            self.num_context_tokens = 4
        super().__post_init__()
        if self.context_learner not in LEARNER_CONFIGS:
            raise ValueError(f"`context_learner` must be one of {list(LEARNER_CONFIGS)}, got {self.context_learner!r}.")
        for name, value in self._learner_settings().items():
            setattr(self, name, value)
        if self.class_specific_context:
            raise ValueError("`class_specific_context` must be False for IPL: it reads one shared context.")
        for name in ("vocabulary_size", "prefilter_size", "num_selected_tokens"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"`{name}` must be a positive int or None, got {value!r}.")
        if self.selection_interval < 1:
            raise ValueError(f"`selection_interval` must be >= 1, got {self.selection_interval}.")
        if self.redundancy_weight < 0 or self.anchor_weight < 0:
            raise ValueError("`redundancy_weight` and `anchor_weight` must be >= 0.")
        if self.probe_template.count("{}") != 1:
            raise ValueError(f"`probe_template` must contain exactly one '{{}}' for the class name, got {self.probe_template!r}.")
        if not 1 <= self.min_word_length <= self.max_word_length:
            raise ValueError(
                f"`min_word_length` / `max_word_length` must satisfy 1 <= min <= max, got "
                f"{self.min_word_length} / {self.max_word_length}."
            )

    def _learner_settings(self) -> dict:
        """The learner's settings: its config's defaults updated with the overrides, validated by its config."""
        learner = self.context_learner
        if self.intcoop is not None and learner != "intcoop":
            raise ValueError(f"`intcoop` settings need `context_learner='intcoop'`, got {learner!r}.")
        if self.intcoop is not None and self.learner_settings is not None:
            raise ValueError("Give the IntCoOp settings once: `intcoop` or `learner_settings`, not both.")
        overrides = dict(self.intcoop or self.learner_settings or {})
        config_cls = LEARNER_CONFIGS[learner]
        if config_cls is None:
            if overrides:
                raise ValueError(f"`learner_settings` must be empty for context_learner={learner!r}, got {overrides}.")
            return {}
        valid = learner_setting_names(config_cls)
        shared = sorted(set(overrides) & PROMPT_FIELDS)
        if shared:
            raise ValueError(f"`{'intcoop' if self.intcoop else 'learner_settings'}` must not set the prompt fields "
                             f"{shared}: set them on IPLConfig itself.")  # fmt: skip
        unknown = sorted(set(overrides) - set(valid))
        if unknown:
            raise ValueError(f"`{'intcoop' if self.intcoop else 'learner_settings'}` has unknown settings {unknown}; "
                             f"valid ones: {list(valid)}.")  # fmt: skip
        prompt = {name: getattr(self, name) for name in ("class_names", "template", "num_context_tokens",
                                                         "context_init", "cache_image_features")}  # fmt: skip
        try:
            resolved = config_cls(**prompt, **overrides)
        except ValueError as error:
            raise ValueError(f"IPLConfig with context_learner={learner!r}: {error}") from None
        return {name: getattr(resolved, name) for name in valid}
