"""Cost of one greedy step of IPL's task-loss word selection, and how often the proxy pre-filter picks the exact word.

1. Timing at CLIP ViT-B/16 text-tower size (width 512, 12 layers, 8 heads; random weights), 100 classes of 16 shots
   (random normalised image features: the cost does not depend on them) and the default candidate vocabulary
   (``IPLConfig.vocabulary_size`` most frequent readable words):
   * once per run: the candidates' own features ``g("w")`` (for the proxy and the redundancy term);
   * one greedy step at the default pre-filter size (first step: every pre-filtered candidate scored; second step:
     lazy greedy), i.e. ``IPLModel.select_next_word`` as training runs it;
   * exact scoring of every candidate, with key/value reuse (measured on a slice of candidates, scaled to all) and
     without it (full probe prompts through ``CLIPModel.get_text_features``, measured on a smaller slice).
2. Agreement on the shipped ConceptWorld CLIP with its real training images (base classes, 16 shots): the exact
   objective of every candidate against the pre-filter's pick at several pre-filter sizes: whether the pick is the
   exact best, its exact rank, the objective it loses, and the share of the exact top 10 inside the pre-filter.

    python benchmarks/ipl_selection_cost.py [--classes 100] [--shots 16] [--prefilter-sizes 8 16 32 64 128]
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from peft import get_peft_model
from transformers import CLIPConfig, CLIPModel

from peft_interp import IPLConfig
from peft_interp.data import load_clip_tokenizer
from peft_interp.tuners.clip_prompt.vocabulary import readable_token_ids
from peft_interp.tuners.ipl.selection import TaskLossSelector, probe_ids, redundancy, task_loss

B16_TEXT = dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8, vocab_size=49408)
TINY_VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32,
                   patch_size=16)  # fmt: skip


@dataclass
class Timing:
    wall: float  # seconds this run got
    cpu: float  # CPU seconds of the process (all threads)

    @property
    def idle(self) -> float:
        """CPU seconds per thread: the wall time on an idle machine with this many threads."""
        return self.cpu / torch.get_num_threads()


def timed(function):
    """``(result, Timing)`` of one call."""
    start, cpu = time.perf_counter(), time.process_time()
    result = function()
    return result, Timing(time.perf_counter() - start, time.process_time() - cpu)


def row(label: str, timing: Timing, scale: float = 1.0) -> str:
    return f"{label:<62} {timing.wall * scale:>9.1f} {timing.idle * scale:>12.1f}"


def b16_selector(num_classes: int, shots: int, prefilter_size: int | None):
    """An IPL adapter on a random CLIP with B/16's text tower, its selector fed random training features."""
    torch.manual_seed(0)
    clip = CLIPModel(CLIPConfig(text_config=B16_TEXT, vision_config=TINY_VISION, projection_dim=512)).eval()
    tokenizer = load_clip_tokenizer()
    # class names: readable words outside the candidate vocabulary (like dataset class names)
    names = tokenizer.convert_ids_to_tokens(readable_token_ids(tokenizer)[-num_classes:].tolist())
    names = [name.removesuffix("</w>") for name in names]
    model = get_peft_model(clip, IPLConfig(class_names=names, prefilter_size=prefilter_size))
    labels = torch.arange(num_classes).repeat_interleave(shots)
    features = F.normalize(torch.randn(len(labels), 512), dim=-1)
    model.base_model.set_selection_data(features, labels, steps_per_epoch=1)
    return model


def full_prompt_losses(selector: TaskLossSelector, selected: list[int], token_ids: torch.Tensor) -> torch.Tensor:
    """``L_rel(S + w)`` by encoding every whole probe prompt with ``CLIPModel.get_text_features`` (no reuse)."""
    features = []
    for token_id in token_ids.tolist():
        rows = probe_ids(selector.tokenizer, selector.probe_template, selector.class_names, selected + [token_id])
        length = max(len(row) for row in rows)
        ids = torch.full((len(rows), length), selector.tokenizer.eos_token_id)
        for r, row in enumerate(rows):
            ids[r, : len(row)] = torch.tensor(row)
        with torch.no_grad():
            out = selector.clip.get_text_features(input_ids=ids).pooler_output
        features.append(F.normalize(out, dim=-1))
    return task_loss(torch.stack(features, dim=1), selector.image_embeds, selector.labels, selector.logit_scale())


def timing(args) -> None:
    model = b16_selector(args.classes, args.shots, args.prefilter_size)
    tuner = model.base_model
    selector = tuner.__dict__["_selection"]["default"].selector
    vocabulary = len(selector.candidate_ids)
    _, word_seconds = timed(lambda: selector.word_features)
    first, first_seconds = timed(tuner.select_next_word)
    second, second_seconds = timed(tuner.select_next_word)
    selected = [first.token_id]
    sample = selector.candidate_ids[: args.exact_sample]
    _, reuse_seconds = timed(lambda: selector.relevance_losses(selected, sample))
    small = selector.candidate_ids[: args.full_sample]
    _, full_seconds = timed(lambda: full_prompt_losses(selector, selected, small))
    per_reuse, per_full = reuse_seconds.idle / len(sample), full_seconds.idle / len(small)
    reference_ids = torch.randint(1000, 40000, (100, 20))
    with torch.no_grad():  # the machine's speed now: one plain text forward, 100 prompts x 20 tokens
        _, reference = timed(lambda: model.base_model.model.get_text_features(input_ids=reference_ids))
    load = os.getloadavg()[0]

    print(f"IPL greedy step, CLIP-B/16 text tower (random weights), {args.classes} classes x {args.shots} shots, "
          f"{vocabulary} candidate words, {torch.get_num_threads()} threads\n")  # fmt: skip
    print(f"{'what':<62} {'wall s':>9} {'CPU s/thread':>12}")
    print(row(f"candidate features g(w), once per run ({vocabulary} words)", word_seconds))
    print(row(f"step 1, pre-filter {args.prefilter_size} ({first.num_scored} scored exactly)", first_seconds))
    print(row(f"step 2, pre-filter {args.prefilter_size} + lazy greedy ({second.num_scored} scored exactly)", second_seconds))
    print(row(f"exact, every candidate, key/value reuse (from {len(sample)} measured)", reuse_seconds,
              vocabulary / len(sample)))  # fmt: skip
    print(row(f"exact, every candidate, whole prompts (from {len(small)} measured)", full_seconds, vocabulary / len(small)))
    print(row("reference: one text forward of 100 prompts x 20 tokens", reference))
    worst = max(first_seconds.idle, second_seconds.idle)
    print(f"\nkey/value reuse: {per_full / per_reuse:.1f}x faster per candidate. Load average {load:.1f} on "
          f"{os.cpu_count()} cores: wall time is what this run got; CPU seconds per thread is the wall time of an "
          f"idle machine. Target < 10 s per step: {'met' if worst < 10 else 'NOT met'} ({worst:.1f} s, CPU s/thread).")


def agreement(args) -> None:
    from peft_interp.data import class_names, load_conceptworld
    from peft_interp.shipped import default_processor, load_default

    names = class_names("base_train")
    model = get_peft_model(load_default("clip"), IPLConfig(class_names=names, prefilter_size=None))
    data = load_conceptworld("base_train", shots=args.shots, seed=1)
    pixels = default_processor("clip")(images=list(data["image"]), return_tensors="pt").pixel_values
    tuner = model.base_model
    features = torch.cat([tuner.frozen_image_features(pixels[i : i + 128]) for i in range(0, len(pixels), 128)])
    tuner.set_selection_data(features, torch.tensor(data["label"]), steps_per_epoch=1)
    selector = tuner.__dict__["_selection"]["default"].selector
    print(f"\nPre-filter agreement with exact scoring: shipped ConceptWorld CLIP, {len(names)} base classes x "
          f"{args.shots} shots, {len(selector.candidate_ids)} candidates, exact objective of every candidate\n")  # fmt: skip
    print(f"{'step':>4} {'pre-filter':>10} {'same word':>9} {'exact rank':>10} {'objective lost':>14} "
          f"{'exact top-10 inside':>19}")  # fmt: skip
    selected: list[int] = []
    for step in range(2):
        probe = selector.probe_features(selected)
        available = ~torch.isin(selector.candidate_ids, torch.tensor(selected, dtype=torch.long))
        losses, seconds = timed(lambda: selector.relevance_losses(selected, selector.candidate_ids))
        chosen = selector.word_features[[int((selector.candidate_ids == i).nonzero()) for i in selected]]
        objective = losses + selector.redundancy_weight * redundancy(selector.word_features, chosen)
        objective[~available] = float("inf")
        order = objective.argsort()
        top10 = set(order[:10].tolist())
        for size in args.prefilter_sizes:
            selector.prefilter_size = size
            pool = selector.prefilter(probe, available)
            pick = pool[objective[pool].argmin()]
            rank = int((order == pick).nonzero()) + 1
            lost = float(objective[pick] - objective[order[0]])
            inside = len(top10 & set(pool.tolist())) / 10
            print(f"{step + 1:>4} {size:>10} {'yes' if rank == 1 else 'no':>9} {rank:>10} {lost:>14.4f} {inside:>19.0%}")
        word = selector.tokenizer.convert_ids_to_tokens(int(selector.candidate_ids[order[0]]))
        print(f"     exact best: {word.removesuffix('</w>')!r} ({seconds.idle:.1f} CPU s/thread to score all exactly)")
        selected.append(int(selector.candidate_ids[order[0]]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--shots", type=int, default=16)
    parser.add_argument("--prefilter-size", type=int, default=IPLConfig.prefilter_size, help="timed step's pre-filter")
    parser.add_argument("--exact-sample", type=int, default=64, help="candidates timed for exact scoring with reuse")
    parser.add_argument("--full-sample", type=int, default=4, help="candidates timed for exact scoring without reuse")
    parser.add_argument("--prefilter-sizes", type=int, nargs="+", default=[8, 16, 32, 64, 128, 256])
    parser.add_argument("--skip-agreement", action="store_true")
    parser.add_argument("--skip-timing", action="store_true", help="only the agreement table")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.skip_timing:
        timing(args)
    if not args.skip_agreement:
        agreement(args)


if __name__ == "__main__":
    main()
