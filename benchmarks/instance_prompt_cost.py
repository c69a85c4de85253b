"""Cost of IntCoOp's instance-conditioned prompts: our batched encoding against a naive per-image loop.

CLIP ViT-B/16 configuration (random weights), 100 classes, batch 8, CPU. Every image makes its own 100 prompts
(``[SOS] v_1(x) .. v_4(x) A(x) <class>. [EOS]``), so a batch is 800 text sequences. Cases:

* ``naive per-image loop``  written out below as CoCoOp-style reference code runs it: for each image, the
  (prompted) image tower, then its 100 prompts padded to CLIP's 77 tokens through the text encoder, then (training)
  that image's loss backward, gradients accumulated over the batch (the memory-frugal way to write the loop; the
  baseline of the ratios);
* ``IntCoOp (ours)``        ``IntCoOpModel``: the B x C prompts cut to the longest EOS and encoded in chunks of
  ``max_prompts_per_text_call=256`` rows, each chunk under activation checkpointing in training;
* ``CoOp (reference)``      ``CoOpModel`` (one prompt set for the whole batch): what instance conditioning costs.

Both IntCoOp cases use the config's defaults (deep visual prompts in 9 vision blocks, so the image tower runs with
autograd in training) and the same objective (cross-entropy + 8 x the regularisation toward the plain hand-crafted
prompts; no attribute labels), same learnt modules. ``train``: forward + backward + SGD step; ``eval``: forward
under ``no_grad``. Time: median of ``--repeats`` interleaved steps after a warm-up (``_measure.py``); memory: peak
resident memory one step adds, each case in a fresh process.

    python benchmarks/instance_prompt_cost.py [--repeats 1] [--modes train eval]

``--smoke`` runs the same code on a tiny CLIP (seconds; checks the script, measures nothing meaningful).
"""

from __future__ import annotations

import argparse
import json

import _measure

BATCH_SIZE = 8
NUM_CLASSES = 100
CASES = ("naive per-image loop", "IntCoOp (ours)", "CoOp (reference)")
BASELINE = CASES[0]


def build_clip(smoke: bool):
    import torch
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    if smoke:
        vision = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, patch_size=8,
                      image_size=32)
        text = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    else:
        vision = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                      patch_size=16, image_size=224)
        text = dict(hidden_size=512, num_hidden_layers=12, num_attention_heads=8, intermediate_size=2048)
    config = CLIPConfig(vision_config=vision, text_config=text, projection_dim=text["hidden_size"])
    return CLIPModel(config).eval().requires_grad_(False)


def class_names(count: int) -> list[str]:
    colours = ["red", "green", "blue", "yellow", "orange", "purple", "black", "white", "brown", "grey"]
    animals = ["bird", "cat", "dog", "fox", "owl", "horse", "sheep", "whale", "frog", "lizard"]
    return [f"{colour} {animal}" for colour in colours for animal in animals][:count]


def batch(clip):
    import torch

    size = clip.config.vision_config.image_size
    generator = torch.Generator().manual_seed(1)
    pixels = torch.randn(BATCH_SIZE, 3, size, size, generator=generator)
    return pixels, torch.randint(0, NUM_CLASSES, (BATCH_SIZE,), generator=generator)


def intcoop_model(clip):
    import torch
    from peft import get_peft_model

    from peft_interp import IntCoOpConfig

    depth = min(9, clip.config.vision_config.num_hidden_layers)  # 9 = the default; the smoke CLIP has 2 blocks
    model = get_peft_model(clip, IntCoOpConfig(class_names=class_names(NUM_CLASSES), visual_prompt_depth=depth))
    with torch.no_grad():  # a trained-looking attention (its output projection starts at zero)
        model.base_model.intcoop_conditioner["default"].attention.out_proj.weight.normal_(0, 0.02)
    return model


def naive_step(clip, train: bool):
    """The per-image loop: 77-token prompts, one image at a time, the same modules and loss as IntCoOpModel."""
    import torch
    import torch.nn.functional as F

    from peft_interp.data import load_clip_tokenizer

    model = intcoop_model(clip)
    tuner = model.base_model
    config = tuner.peft_config["default"]
    names, num_context = config.class_names, config.num_context_tokens
    tokenizer = load_clip_tokenizer()
    text = clip.text_model
    prompts = [" ".join(["X"] * (num_context + 1)) + f" {name}." for name in names]
    ids = tokenizer(prompts, padding="max_length", max_length=77, return_tensors="pt").input_ids  # (C, 77)
    eos = (ids == tokenizer.eos_token_id).int().argmax(dim=-1)
    with torch.no_grad():
        fixed = tuner.context_layer.get_base_layer()(ids)  # (C, 77, D) frozen token embeddings
        positions = text.embeddings.position_embedding(torch.arange(77))[None]
        reference = tuner.zero_shot_text_features(names, config.template)  # (C, P) L_reg targets
    context = tuner.context_layer.context["default"]
    conditioner, extractor = tuner.intcoop_conditioner["default"], tuner.intcoop_attribute["default"]
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.0035)
    pixels, labels = batch(clip)
    rows = torch.arange(len(names))

    def image_loss(pixel_values, label):
        tokens, pooled = (x[0] for x in tuner.image_features(pixel_values[None]))  # (N, P), (P,): prompted tower
        conditioned, _ = conditioner(context, tokens[None])  # (1, M, D)
        prefix = torch.cat([conditioned[0], extractor(pooled)[None]])  # (M + 1, D)
        embeds = torch.cat([fixed[:, :1], prefix.expand(len(names), -1, -1), fixed[:, 2 + num_context :]], dim=1)
        hidden = text.encoder(inputs_embeds=embeds + positions, is_causal=True).last_hidden_state
        features = F.normalize(clip.text_projection(text.final_layer_norm(hidden)[rows, eos]), dim=-1)  # (C, P)
        logits = clip.logit_scale.exp() * features @ F.normalize(pooled, dim=-1)
        regularization = (features - reference).pow(2).sum(dim=-1).mean()
        loss = F.cross_entropy(logits[None], label[None]) + config.regularization_weight * regularization
        return loss / len(pixels)  # gradients accumulate to the batch mean

    def step():
        with torch.set_grad_enabled(train):
            for b in range(len(pixels)):
                loss = image_loss(pixels[b], labels[b])
                if train:
                    loss.backward()
        if train:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    return step


def model_step(model, clip, train: bool):
    import torch

    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.0035)
    pixels, labels = batch(clip)
    model.train(train)

    def step():
        with torch.set_grad_enabled(train):
            loss = model(pixel_values=pixels, labels=labels).loss
        if train:
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    return step


def make_step(case: str, mode: str, smoke: bool):
    clip = build_clip(smoke)
    train = mode == "train"
    if case == "naive per-image loop":
        return naive_step(clip, train)
    if case == "IntCoOp (ours)":
        return model_step(intcoop_model(clip), clip, train)
    from peft import get_peft_model

    from peft_interp import CoOpConfig

    return model_step(get_peft_model(clip, CoOpConfig(class_names=class_names(NUM_CLASSES))), clip, train)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--modes", nargs="+", default=["train", "eval"], choices=["train", "eval"])
    parser.add_argument("--smoke", action="store_true", help="tiny CLIP: check the script only")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    smoke = ["--smoke"] if args.smoke else []
    if args.worker:
        task, mode, *rest = args.worker
        if task == "time":
            steps = {case: make_step(case, mode, args.smoke) for case in CASES}
            print(json.dumps(_measure.interleaved_medians(steps, args.repeats)))
        else:
            print(json.dumps(_measure.added_peak_mib(make_step(rest[0], mode, args.smoke))))
        return

    size = "tiny CLIP (smoke test)" if args.smoke else "CLIP ViT-B/16 config (random weights)"
    print(f"{size}, {NUM_CLASSES} classes, batch {BATCH_SIZE} ({BATCH_SIZE * NUM_CLASSES} prompts), CPU, "
          f"median of {args.repeats} interleaved steps\n")  # fmt: skip
    header = f"{'mode':<6} {'case':<22} {'step s':>7} {'images/s':>9} {'speed-up':>9} {'peak MiB':>9} {'ratio':>6}"
    print(header)
    print("-" * len(header), flush=True)
    for mode in args.modes:
        seconds = _measure.run_worker(__file__, ["time", mode, *smoke, "--repeats", str(args.repeats)])
        memory = {
            case: _measure.run_worker(__file__, ["memory", mode, case, *smoke], env=_measure.MMAP_ENV) for case in CASES
        }
        for case in CASES:
            print(
                f"{mode:<6} {case:<22} {seconds[case]:>7.2f} {BATCH_SIZE / seconds[case]:>9.2f} "
                f"{seconds[BASELINE] / seconds[case]:>8.1f}x {memory[case]:>9.0f} "
                f"{memory[case] / memory[BASELINE]:>6.2f}",
                flush=True,
            )
    print("target: IntCoOp >= 3x the naive loop's images/s at equal or lower peak memory (ratio <= 1).")


if __name__ == "__main__":
    main()
