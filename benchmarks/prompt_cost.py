"""Training speed and memory of our CoOp against a faithful 77-token CoOp, and IPL's token-selection time.

CLIP ViT-B/16 configuration (random weights), batch 32, CPU. For 10 and 100 classes, three ways to train CoOp's
context (SGD step on cross-entropy):

* ``faithful 77-token``  the reference recipe, written out below: every prompt padded to CLIP's 77 tokens, image
  features recomputed at every step (the baseline of the ratios);
* ``ours, no cache``     ``CoOpModel``: prompts cut to the longest EOS position, image features without autograd;
* ``ours, cache``        the same with ``cache_image_features=True`` (steady state: every image seen before, as from
  the second epoch on).

Then the discrete step of IPL's coverage_anchor variant: greedy selection of 16 tokens over the full 49,408-token vocabulary, and the
``select_tokens`` call of an ``IPLModel`` (readable-word filter, assignment) with 16 context tokens.

Time: median of ``--repeats`` interleaved steps after a warm-up (see ``_measure.py``); memory: peak resident memory
one step adds, each case in a fresh process.

``--breakdown`` first times the parts of a step without the cache, interleaved in one process: the frozen image
tower's forward (the same call in both implementations), each implementation's text side given the image features
(prompt encoding, loss, backward, SGD step), and both whole steps; it prints Amdahl's bound on the no-cache
speed-up, ``(I + T_faithful) / I``: however cheap our text side, a step still runs the image tower.

    python benchmarks/prompt_cost.py [--repeats 3] [--breakdown | --breakdown-only]
"""

from __future__ import annotations

import argparse
import time

import _measure

BATCH_SIZE = 32
CLASS_COUNTS = (10, 100)
CASES = ("faithful 77-token", "ours, no cache", "ours, cache")
NUM_CONTEXT = 4


def build_clip():
    import torch
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    config = CLIPConfig(
        vision_config=dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                           patch_size=16, image_size=224),
        text_config=dict(hidden_size=512, num_hidden_layers=12, num_attention_heads=8, intermediate_size=2048),
        projection_dim=512,
    )  # fmt: skip
    return CLIPModel(config).eval().requires_grad_(False)


def class_names(count: int) -> list[str]:
    colours = ["red", "green", "blue", "yellow", "orange", "purple", "black", "white", "brown", "grey"]
    animals = ["bird", "cat", "dog", "fox", "owl", "horse", "sheep", "whale", "frog", "lizard"]
    return [f"{colour} {animal}" for colour in colours for animal in animals][:count]


def faithful_coop_parts(clip, names: list[str]):
    """CoOp as the reference code runs it, in two parts: ``image()`` (the frozen image tower, no autograd) and
    ``text(image_features)`` (77-token prompts forward, loss, backward, SGD step)."""
    import torch
    import torch.nn.functional as F

    from peft_interp.data import load_clip_tokenizer

    tokenizer = load_clip_tokenizer()
    text = clip.text_model
    prompts = [" ".join(["X"] * NUM_CONTEXT) + f" {name}." for name in names]
    ids = tokenizer(prompts, padding="max_length", max_length=77, return_tensors="pt").input_ids  # (C, 77)
    eos = (ids == tokenizer.eos_token_id).int().argmax(dim=-1)
    init = tokenizer.encode("a photo of a", add_special_tokens=False)
    context = torch.nn.Parameter(text.embeddings.token_embedding.weight[init].clone())  # (M, D)
    optimizer = torch.optim.SGD([context], lr=0.002)
    pixels, labels = torch.randn(BATCH_SIZE, 3, 224, 224), torch.randint(0, len(names), (BATCH_SIZE,))

    def image():
        with torch.no_grad():
            return F.normalize(clip.get_image_features(pixel_values=pixels).pooler_output, dim=-1)

    def text_step(image_features):
        embeds = text.embeddings.token_embedding(ids)  # (C, 77, D)
        embeds = torch.cat([embeds[:, :1], context.expand(len(names), -1, -1), embeds[:, 1 + NUM_CONTEXT :]], dim=1)
        hidden = embeds + text.embeddings.position_embedding(torch.arange(77))[None]
        hidden = text.encoder(inputs_embeds=hidden, is_causal=True).last_hidden_state
        pooled = text.final_layer_norm(hidden)[torch.arange(len(names)), eos]
        features = F.normalize(clip.text_projection(pooled), dim=-1)
        loss = F.cross_entropy(clip.logit_scale.exp() * image_features @ features.T, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return image, text_step


def faithful_coop_step(clip, names: list[str]):
    """CoOp as the reference code runs it: 77-token prompts, image features at every step."""
    image, text_step = faithful_coop_parts(clip, names)
    return lambda: text_step(image())


def our_coop_parts(clip, names: list[str], cache: bool):
    """``CoOpModel``: ``step()`` (the whole training step, as a user runs it) and ``text(image_features)`` (the same
    step given the normalised image features: prompt encoding, loss, backward, SGD step)."""
    import torch
    from peft import get_peft_model

    from peft_interp import CoOpConfig

    config = CoOpConfig(class_names=names, num_context_tokens=NUM_CONTEXT, cache_image_features=cache)
    model = get_peft_model(clip, config)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.002)
    pixels, labels = torch.randn(BATCH_SIZE, 3, 224, 224), torch.randint(0, len(names), (BATCH_SIZE,))

    def run(**inputs):
        loss = model(labels=labels, **inputs).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return (lambda: run(pixel_values=pixels)), (lambda image_features: run(image_embeds=image_features))


def our_coop_step(clip, names: list[str], cache: bool):
    return our_coop_parts(clip, names, cache)[0]


def breakdown_seconds(count: int, repeats: int) -> dict[str, float]:
    """Interleaved medians of the parts of a no-cache step: the frozen image tower (the same call in both
    implementations; also under ``inference_mode`` instead of ``no_grad``), each text side given the image features,
    and both whole steps (to check that the parts add up)."""
    import torch

    names = class_names(count)
    faithful_clip = build_clip()
    image, faithful_text = faithful_coop_parts(faithful_clip, names)
    ours_step, ours_text = our_coop_parts(build_clip(), names, cache=False)
    features = image()
    pixels = torch.randn(BATCH_SIZE, 3, 224, 224)

    def image_inference_mode():
        with torch.inference_mode():
            faithful_clip.get_image_features(pixel_values=pixels)

    runs = {
        "image tower forward": image,
        "image tower, inference_mode": image_inference_mode,
        "faithful text fwd+bwd": lambda: faithful_text(features),
        "ours text fwd+bwd": lambda: ours_text(features),
        "faithful step": lambda: faithful_text(image()),
        "ours, no cache step": ours_step,
    }
    return _measure.interleaved_medians(runs, repeats)


def make_step(case: str, clip, names: list[str]):
    if case == "faithful 77-token":
        return faithful_coop_step(clip, names)
    return our_coop_step(clip, names, cache=case == "ours, cache")


def selection_seconds(repeats: int) -> dict:
    """Greedy selection over the full vocabulary, and IPLModel.select_tokens with its readable-word filter."""
    import torch.nn.functional as F
    from peft import get_peft_model

    from peft_interp import IPLConfig
    from peft_interp.tuners.ipl.selection import greedy_select

    config = IPLConfig(class_names=class_names(10), num_context_tokens=16, context_init=None, variant="coverage_anchor")
    model = get_peft_model(build_clip(), config)
    tuner = model.base_model
    units = F.normalize(tuner.context_layer.weight.float(), dim=-1)  # (49408, D): precomputed once
    context = tuner.context_layer.context["default"].detach()

    def full_vocabulary():
        relevance = F.normalize(context, dim=-1) @ units.T  # (16, 49408)
        greedy_select(relevance, units, k=16, redundancy_weight=0.1)

    start = time.perf_counter()
    tuner.select_tokens()  # first call also builds the readable-word candidate list
    first_call = time.perf_counter() - start
    medians = _measure.interleaved_medians({"full": full_vocabulary, "ipl": tuner.select_tokens}, repeats)
    return {
        "full vocabulary": medians["full"],
        "select_tokens": medians["ipl"],
        "first call": first_call,
        "candidates": len(tuner.candidate_ids()),
        "vocabulary": len(units),
    }


def print_breakdown(repeats: list[str]) -> None:
    print("Breakdown of a training step without the cache (median of interleaved runs; the image tower is the same "
          "frozen ViT-B/16 forward, no autograd, in both implementations):")  # fmt: skip
    header = f"{'classes':>7}  {'part':<30} {'seconds':>8} {'share of faithful':>18}"
    print(header)
    print("-" * len(header))
    for count in CLASS_COUNTS:
        parts = _measure.run_worker(__file__, ["breakdown", str(count), *repeats])
        image, faithful, ours = parts["image tower forward"], parts["faithful text fwd+bwd"], parts["ours text fwd+bwd"]
        total = image + faithful
        for name, seconds in parts.items():
            print(f"{count:>7}  {name:<30} {seconds:>8.2f} {100 * seconds / total:>17.0f}%")
        print(
            f"{count:>7}  Amdahl: image share of the faithful step p = {image / total:.2f}; with the text side free the "
            f"speed-up is at most 1/p = {total / image:.2f}x; from the parts (I + T_faithful) / (I + T_ours) = "
            f"{total / (image + ours):.2f}x; measured whole steps {parts['faithful step'] / parts['ours, no cache step']:.2f}x; "
            f"text side alone {faithful / ours:.1f}x"
        )  # fmt: skip
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--breakdown", action="store_true", help="also time the parts of a no-cache step")
    parser.add_argument("--breakdown-only", action="store_true", help="only the breakdown")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        import json

        task, *rest = args.worker
        if task == "time":
            names = class_names(int(rest[0]))  # each case gets its own (identical) CLIP
            print(json.dumps(_measure.interleaved_medians({c: make_step(c, build_clip(), names) for c in CASES}, args.repeats)))
        elif task == "memory":
            count, case = int(rest[0]), rest[1]
            print(json.dumps(_measure.added_peak_mib(make_step(case, build_clip(), class_names(count)))))
        elif task == "breakdown":
            print(json.dumps(breakdown_seconds(int(rest[0]), args.repeats)))
        else:
            print(json.dumps(selection_seconds(args.repeats)))
        return

    print(f"CLIP ViT-B/16 config (random weights), batch {BATCH_SIZE}, {NUM_CONTEXT} context tokens, CPU, "
          f"median of {args.repeats} interleaved steps\n")  # fmt: skip
    repeats = ["--repeats", str(args.repeats)]
    if args.breakdown or args.breakdown_only:
        print_breakdown(repeats)
    if args.breakdown_only:
        return
    header = f"{'classes':>7}  {'CoOp training':<20} {'step s':>7} {'images/s':>9} {'speed-up':>9} {'peak MiB':>9} {'ratio':>6}"
    print(header)
    print("-" * len(header))
    for count in CLASS_COUNTS:
        seconds = _measure.run_worker(__file__, ["time", str(count), *repeats])
        memory = {c: _measure.run_worker(__file__, ["memory", str(count), c], env=_measure.MMAP_ENV) for c in CASES}
        base = CASES[0]
        for case in CASES:
            print(
                f"{count:>7}  {case:<20} {seconds[case]:>7.2f} {BATCH_SIZE / seconds[case]:>9.1f} "
                f"{seconds[base] / seconds[case]:>8.1f}x {memory[case]:>9.0f} {memory[case] / memory[base]:>6.2f}"
            )
    print("targets: speed-up >= 4x with the cache, >= 2x without.\n")

    selection = _measure.run_worker(__file__, ["selection", *repeats])
    print("IPL token selection, 16 context tokens (target < 2 s):")
    print(f"  greedy over the full vocabulary ({selection['vocabulary']:,} tokens): {selection['full vocabulary']:.3f} s")
    print(
        f"  IPLModel.select_tokens over {selection['candidates']:,} readable words: {selection['select_tokens']:.3f} s "
        f"(first call, building the word list: {selection['first call']:.2f} s)"
    )


if __name__ == "__main__":
    main()
