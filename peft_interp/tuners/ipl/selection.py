"""IPL's discrete step: greedy selection of readable words.

Task-loss selection (``IPLConfig(variant="hybrid")``, the default)
------------------------------------------------------------------
Pick the next word ``w`` of the ordered selection ``S`` by::

    w* = argmin_{w in V \\ S}  L_rel(S + w) + gamma * D(w | S)
    L_rel(S) = mean_i CE(s * v_i . [g(T_1(S)) .. g(T_C(S))], y_i)          (task loss of the probe prompts)
    D(w | S) = mean_{u in S} cos(g("w"), g("u"))   (0 for an empty S)     (redundancy)

``v_i`` the cached, normalised features of the training images, ``s`` CLIP's logit scale, ``g`` the frozen text
tower (normalised), ``T_c(S)`` the probe prompt ``"a photo of a {c}, with emphasis on: s_1, .., s_k"``. Greedy
maximises ``F(S) = -L_rel(S) - gamma * sum_k D(s_k | s_<k)``; gains are only roughly diminishing and the penalty
depends on the order, hence "approximate submodular". Exact scoring costs ``|V| x C`` probe encodings per step;
three speed-ups (all in :class:`TaskLossSelector`, each a config field):

* key/value reuse (:mod:`.probe`, always on, exact): per class the probe prefix is encoded once, each candidate
  then costs two tokens (``w`` and EOS) instead of the whole prompt;
* proxy pre-filter (``prefilter_size``): only the candidates with the largest spread over classes of
  ``cos(g("w"), g(T_c(S)))`` (words that move some classes' probes and not others) are scored exactly;
* lazy greedy (``lazy_greedy``): a candidate's gain from the previous step bounds its current one when gains
  diminish, so candidates are re-scored best bound first until no stale bound beats the best fresh gain.

Coverage selection (``variant="coverage_anchor"``, an option)
--------------------------------------------------------------
Choose a set ``S`` of ``k`` candidate tokens for ``M`` context vectors ``c_p`` by maximising

    F(S) = sum_p max(0, max_{t in S} sim(c_p, e_t))  -  gamma * sum_{i >= 2} max_{j < i} max(0, sim(e_{s_i}, e_{s_j}))

* relevance: a facility-location term, every context vector is represented by its most similar selected token
  (cosine similarity in CLIP's token-embedding space). It is monotone submodular, so for ``gamma = 0`` the
  greedy solution is within ``1 - 1/e`` of the optimum (Nemhauser et al., 1978).
* diversity: each new token pays ``gamma`` times its similarity to the closest token chosen before it. The term
  depends on the order of selection, which makes the objective only approximately submodular (like the diversity
  penalty of IPL's reference trainer, gamma = 0.1 there).

Every marginal gain can only shrink as ``S`` grows (coverage saturates, the penalty grows), so lazy greedy would
make the same picks; scoring all candidates at once is simpler and, vectorised, already takes only milliseconds
per pick on CLIP's vocabulary (a lazy variant tried here was slower: with ``M`` small, coverage saturates fast and
stale bounds rarely hold).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .probe import PrefixCache, encode_prefixes, encode_suffixes, extend_prefixes


def cosine_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(N, D), (V, D) -> (N, V)`` cosine similarities."""
    return F.normalize(a.float(), dim=-1) @ F.normalize(b.float(), dim=-1).T


def selection_objective(
    relevance: torch.Tensor, token_similarity: torch.Tensor, selected: list[int], redundancy_weight: float
) -> float:
    """``F(S)`` for an ordered selection (indices into the candidates), as defined above.

    Args:
        relevance: ``(M, V)`` similarity of each context vector to each candidate.
        token_similarity: ``(V, V)`` similarity between candidates (only rows/columns in ``selected`` are read).
    """
    if not selected:
        return 0.0
    coverage = relevance[:, selected].max(dim=1).values.clamp_min(0).sum()
    penalty = sum(token_similarity[selected[i], selected[:i]].clamp_min(0).max() for i in range(1, len(selected)))
    return float(coverage - redundancy_weight * penalty)


def greedy_select(
    relevance: torch.Tensor, candidate_units: torch.Tensor, k: int, redundancy_weight: float
) -> tuple[list[int], list[float]]:
    """Greedily pick ``k`` candidates maximising :func:`selection_objective`.

    Each step scores every remaining candidate at once from two running vectors, the best similarity reached by
    each context vector ``(M,)`` and each candidate's similarity to its closest pick ``(V,)``: ``O(V (M + D))``
    per step, a few milliseconds for CLIP's 49,408 tokens.

    Args:
        relevance: ``(M, V)`` similarity of the ``M`` context vectors to the ``V`` candidates.
        candidate_units: ``(V, D)`` L2-normalised embeddings of the candidates (for the diversity term).
        k: number of tokens to pick (``<= V``).
        redundancy_weight: ``gamma``.

    Returns:
        The picked candidate indices in order and the marginal gain of each pick.
    """
    num_candidates = relevance.shape[1]
    if not 1 <= k <= num_candidates:
        raise ValueError(f"Cannot select k={k} tokens from {num_candidates} candidates.")
    relevance = relevance.detach().clamp_min(0)
    units = candidate_units.detach()
    covered = relevance.new_zeros(relevance.shape[0])  # (M,) best similarity reached so far
    closest_pick = relevance.new_zeros(num_candidates)  # (V,) similarity to the closest pick (penalty from pick 2 on)
    picked: list[int] = []
    gains: list[float] = []
    for _ in range(k):
        gain = (relevance - covered[:, None]).clamp_min(0).sum(dim=0) - redundancy_weight * closest_pick  # (V,)
        if picked:
            gain[picked] = float("-inf")
        best = int(gain.argmax())
        picked.append(best)
        gains.append(float(gain[best]))
        covered = torch.maximum(covered, relevance[:, best])
        closest_pick = torch.maximum(closest_pick, (units @ units[best]).clamp_min(0))
    return picked, gains


# ------------------------------------------------------------------------------------------ task-loss selection
def probe_prefix_ids(tokenizer, probe_template: str, class_names: list[str], selected_ids: list[int]) -> list[list[int]]:
    """Per class, the ids of ``[SOS] <probe_template with the class> s_1 , .. s_k ,`` (what precedes a new word)."""
    comma = tokenizer.encode(",", add_special_tokens=False)
    words = [piece for token_id in selected_ids for piece in [token_id, *comma]]
    return [[tokenizer.bos_token_id, *tokenizer.encode(probe_template.replace("{}", name), add_special_tokens=False),
             *words] for name in class_names]  # fmt: skip


def probe_ids(tokenizer, probe_template: str, class_names: list[str], selected_ids: list[int]) -> list[list[int]]:
    """Per class, the ids of the whole probe prompt ``[SOS] <probe_template with the class> s_1, .., s_k [EOS]``."""
    comma = tokenizer.encode(",", add_special_tokens=False)
    words = [piece for i, token_id in enumerate(selected_ids) for piece in ([*comma] if i else []) + [token_id]]
    return [[tokenizer.bos_token_id, *tokenizer.encode(probe_template.replace("{}", name), add_special_tokens=False),
             *words, tokenizer.eos_token_id] for name in class_names]  # fmt: skip


def task_loss(text_features: torch.Tensor, image_embeds: torch.Tensor, labels: torch.Tensor, logit_scale) -> torch.Tensor:
    """Mean cross-entropy of the images over the classes, for every candidate: ``(C, W, P) -> (W,)``."""
    logits = logit_scale * torch.einsum("np,cwp->wnc", image_embeds.float(), text_features.float())  # (W, N, C)
    return F.cross_entropy(logits.flatten(0, 1), labels.repeat(logits.shape[0]), reduction="none").view(
        logits.shape[0], -1
    ).mean(dim=1)


def redundancy(word_features: torch.Tensor, selected_features: torch.Tensor) -> torch.Tensor:
    """``D(w | S)`` for every candidate: mean cosine to the selected words' features, ``(V, P), (k, P) -> (V,)``."""
    if len(selected_features) == 0:
        return word_features.new_zeros(len(word_features))
    return (word_features @ selected_features.T).mean(dim=1)


@dataclass
class SelectionStep:
    """One greedy step: the word picked and what it cost.

    Args:
        word, token_id: the pick.
        objective: ``L_rel(S + w) + gamma * D(w | S)`` of the pick (lower is better).
        relevance_loss: ``L_rel(S + w)``; ``base_loss``: ``L_rel(S)`` before the step.
        redundancy: ``D(w | S)``.
        num_candidates: candidates left in the vocabulary; ``num_scored``: how many were scored exactly this step.
        seconds: wall time of the step.
    """

    word: str
    token_id: int
    objective: float
    relevance_loss: float
    base_loss: float
    redundancy: float
    num_candidates: int
    num_scored: int
    seconds: float


class TaskLossSelector:
    """Greedy task-loss selection over a fixed candidate vocabulary, for one adapter (see the module docstring).

    Holds what the steps share: the training images' features, the candidates' own features ``g("w")`` (computed
    once, with the ``[SOS]`` prefix reused) and, for lazy greedy, each candidate's last exact gain.

    Args:
        clip: the ``CLIPModel`` (its frozen text tower is run layer by layer, :mod:`.probe`).
        tokenizer: its CLIP tokenizer.
        class_names: the training classes.
        probe_template: with ``{}`` for the class name.
        image_embeds: ``(N, P)`` normalised training image features; ``labels`` ``(N,)``.
        candidate_ids: ``(V,)`` token ids of the candidate words (one token each).
        redundancy_weight: ``gamma``.
        prefilter_size: candidates scored exactly per step (``None``: all).
        lazy_greedy, lazy_batch_size: see :class:`~peft_interp.IPLConfig`.
        chunk_size: candidates per batched suffix pass (memory: ``C x chunk_size`` two-token rows).
    """

    def __init__(self, clip, tokenizer, class_names, probe_template, image_embeds, labels, candidate_ids,
                 redundancy_weight=0.1, prefilter_size=None, lazy_greedy=True, lazy_batch_size=8, chunk_size=64):  # fmt: skip
        if len(image_embeds) != len(labels) or len(labels) == 0:
            raise ValueError(f"Selection needs one label per image feature, got {len(image_embeds)} features and "
                             f"{len(labels)} labels.")  # fmt: skip
        if int(labels.max()) >= len(class_names) or int(labels.min()) < 0:
            raise ValueError(f"Selection labels must be class ids in [0, {len(class_names) - 1}].")
        self.clip, self.tokenizer, self.class_names, self.probe_template = clip, tokenizer, list(class_names), probe_template
        self.image_embeds, self.labels = F.normalize(image_embeds.float(), dim=-1), labels
        self.candidate_ids = candidate_ids
        self.redundancy_weight, self.prefilter_size = redundancy_weight, prefilter_size
        self.lazy_greedy, self.lazy_batch_size, self.chunk_size = lazy_greedy, lazy_batch_size, chunk_size
        self.stale_gains: dict[int, float] = {}  # token id -> last exact gain L_rel(S') - L_rel(S' + w)
        self._word_features: torch.Tensor | None = None

    @property
    def device(self) -> torch.device:
        return self.candidate_ids.device

    def suffixes(self, token_ids: torch.Tensor) -> torch.Tensor:
        """``(W,) -> (W, 2)``: each candidate followed by EOS."""
        return torch.stack([token_ids, torch.full_like(token_ids, self.tokenizer.eos_token_id)], dim=1)

    def encode_candidates(self, cache: PrefixCache, token_ids: torch.Tensor) -> torch.Tensor:
        """``(R, W, P)`` features of every cached prefix followed by every candidate, in chunks of candidates."""
        return torch.cat([encode_suffixes(self.clip, cache, self.suffixes(token_ids[start : start + self.chunk_size]))
                          for start in range(0, len(token_ids), self.chunk_size)], dim=1)  # fmt: skip

    @property
    def word_features(self) -> torch.Tensor:
        """``(V, P)`` ``g("w")`` of every candidate (``[SOS] w [EOS]``), computed once."""
        if self._word_features is None:
            cache = encode_prefixes(self.clip, [[self.tokenizer.bos_token_id]])
            self._word_features = self.encode_candidates(cache, self.candidate_ids)[0]
        return self._word_features

    @torch.no_grad()
    def probe_caches(self, selected_ids: list[int]) -> tuple[torch.Tensor, PrefixCache]:
        """``(C, P)`` features of the probe prompts ``T_c(S)``, and the cache of what precedes a new word in them.

        Both come from one pass over ``[SOS] <probe> s_1, .., s_k`` per class: the probe reads EOS after it, a new
        word follows its extension by a comma (none when ``S`` is empty)."""
        rows = probe_ids(self.tokenizer, self.probe_template, self.class_names, selected_ids)
        cache = encode_prefixes(self.clip, [row[:-1] for row in rows])
        eos = torch.tensor([[self.tokenizer.eos_token_id]], device=self.device)
        probe = encode_suffixes(self.clip, cache, eos)[:, 0]
        if selected_ids:
            cache = extend_prefixes(self.clip, cache, self.tokenizer.encode(",", add_special_tokens=False))
        return probe, cache

    def probe_features(self, selected_ids: list[int]) -> torch.Tensor:
        """``(C, P)`` features of the probe prompts ``T_c(S)``."""
        return self.probe_caches(selected_ids)[0]

    def logit_scale(self) -> torch.Tensor:
        return self.clip.logit_scale.exp().detach().float()

    @torch.no_grad()
    def relevance_losses(self, selected_ids: list[int], token_ids: torch.Tensor, cache: PrefixCache | None = None):
        """``L_rel(S + w)`` ``(W,)`` for the candidates ``token_ids`` (``cache``: the probe prefixes of ``S``)."""
        if cache is None:
            cache = self.probe_caches(selected_ids)[1]
        features = self.encode_candidates(cache, token_ids)  # (C, W, P)
        return task_loss(features, self.image_embeds, self.labels, self.logit_scale())

    def prefilter(self, probe: torch.Tensor, available: torch.Tensor) -> torch.Tensor:
        """Indices (into the candidates) of the ``prefilter_size`` available candidates with the largest proxy."""
        indices = available.nonzero().squeeze(1)
        if self.prefilter_size is None or self.prefilter_size >= len(indices):
            return indices
        proxy = (self.word_features[indices] @ probe.T).std(dim=1)  # (V',) spread over classes
        return indices[proxy.topk(self.prefilter_size).indices]

    @torch.no_grad()
    def step(self, selected_ids: list[int]) -> SelectionStep:
        """Pick the next word after the ordered selection ``selected_ids``."""
        import time

        start = time.perf_counter()
        selected = torch.tensor(selected_ids, dtype=torch.long, device=self.device)
        available = ~torch.isin(self.candidate_ids, selected)
        if not available.any():
            raise ValueError("Every candidate word is already selected: enlarge the vocabulary or select fewer words.")
        probe, cache = self.probe_caches(selected_ids)  # (C, P), what precedes a new word
        scale = self.logit_scale()
        base = float(task_loss(probe[:, None], self.image_embeds, self.labels, scale)[0])
        pool = self.prefilter(probe, available)  # (W,) candidate indices
        chosen_rows = torch.nonzero(self.candidate_ids[:, None] == selected[None], as_tuple=False)
        selected_features = self.word_features[chosen_rows[chosen_rows[:, 1].argsort(), 0]]
        similarity = redundancy(self.word_features[pool], selected_features)  # (W,) D(w | S)
        penalty = self.redundancy_weight * similarity
        ids = self.candidate_ids[pool]
        fresh = torch.full((len(pool),), float("nan"), device=self.device)  # exact L_rel(S + w), where scored
        stale = torch.tensor([self.stale_gains.get(int(i), float("nan")) for i in ids], device=self.device)
        if not self.lazy_greedy or stale.isnan().all():  # first step: score every candidate
            fresh = self.relevance_losses(selected_ids, ids, cache)
        else:  # upper bound of each candidate's gain when gains diminish; never scored: no bound
            bound = (stale - penalty).nan_to_num(float("inf"))
            while True:
                gains = base - fresh - penalty  # nan where not scored
                best = gains.nan_to_num(float("-inf")).max()
                open_ = fresh.isnan() & (bound > best)
                if not open_.any():
                    break
                batch = open_.nonzero().squeeze(1)
                batch = batch[bound[batch].argsort(descending=True)[: self.lazy_batch_size]]
                fresh[batch] = self.relevance_losses(selected_ids, ids[batch], cache)
        scored = ~fresh.isnan()
        for token_id, loss in zip(ids[scored].tolist(), fresh[scored].tolist()):
            self.stale_gains[token_id] = base - loss
        objective = (fresh + penalty).nan_to_num(float("inf"))
        best = int(objective.argmin())
        token_id = int(ids[best])
        word = self.tokenizer.convert_ids_to_tokens(token_id).removesuffix("</w>")
        return SelectionStep(
            word=word, token_id=token_id, objective=float(objective[best]), relevance_loss=float(fresh[best]),
            base_loss=base, redundancy=float(similarity[best]),
            num_candidates=int(available.sum()), num_scored=int(scored.sum()), seconds=time.perf_counter() - start,
        )  # fmt: skip
