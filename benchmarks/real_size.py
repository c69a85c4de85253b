"""Real-size throughput and peak memory of every method against its plain backbone (random weights).

* IVPT on DINOv2-B/14 with 4 registers at 518 px (the official IVPT setting): the plain backbone's forward, IVPT
  inference, and an IVPT training step with the paper's full objective (equivariance pass included);
* CoOp, IPL, IntCoOp and DualViewMI on CLIP ViT-B/16 (224 px, ``--classes`` classes): zero-shot CLIP (the plain
  model: frozen image tower + cached class text features), each method's inference and training step.

Images/s = batch / median seconds of ``--repeats`` interleaved rounds (after a warm-up round); peak memory = the
most memory one run adds over what was held before it (model, optimizer state): ``torch.cuda.max_memory_allocated``
on a GPU, the resident-memory high-water mark on a CPU (the script restarts itself with glibc set to unmap freed
blocks, so resident memory follows live memory). bf16 autocast where the device supports it (``--precision``).

    python benchmarks/real_size.py                      # on a GPU: the real sizes
    python benchmarks/real_size.py --reduced            # on a CPU: DINOv2 at 224 px, batch 2, 10 classes
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
from _measure import MMAP_ENV, added_peak_mib, interleaved_medians

VIT_B = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072}
CLIP_METHODS = ("coop", "ipl", "intcoop", "dualview_mi")


def dinov2_b14(image_size: int, depth: int = 12):
    from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel

    config = Dinov2WithRegistersConfig(**{**VIT_B, "num_hidden_layers": depth}, patch_size=14, image_size=image_size,
                                       num_register_tokens=4)  # fmt: skip
    return Dinov2WithRegistersModel(config)


def clip_b16(depth: int = 12):
    from transformers import CLIPConfig, CLIPModel

    vision = {**VIT_B, "num_hidden_layers": depth, "patch_size": 16, "image_size": 224}
    text = {"hidden_size": 512, "num_hidden_layers": depth, "num_attention_heads": 8, "intermediate_size": 2048,
            "vocab_size": 49408}
    return CLIPModel(CLIPConfig(vision_config=vision, text_config=text, projection_dim=512))


def method_config(method: str, class_names: list[str], depth: int = 12):
    import peft_interp as pi

    if method == "intcoop":  # visual prompts in the blocks after the first (9 of 12 by default)
        return pi.IntCoOpConfig(class_names=class_names, **({} if depth == 12 else {"visual_prompt_depth": depth}))
    return {"coop": pi.CoOpConfig, "ipl": pi.IPLConfig, "dualview_mi": pi.DualViewMIConfig}[method](class_names=class_names)


def build_cases(args, device: torch.device, autocast) -> dict:
    """{case: a function running it once}."""
    from peft import get_peft_model

    from peft_interp import IVPTConfig

    torch.manual_seed(0)
    cases = {}
    size = 224 if args.reduced else 518
    images = torch.randn(args.batch_size, 3, size, size, device=device)
    labels = torch.randint(0, args.num_classes, (args.batch_size,), device=device)
    if "ivpt" in args.families:
        shallow = {} if args.depth >= 4 else {"num_prototypes": [17, 5]}  # one prompted block in a --depth check
        ivpt_config = IVPTConfig(num_classes=args.num_classes, image_size=size, **shallow)
        ivpt = get_peft_model(dinov2_b14(size, args.depth), ivpt_config).to(device)
        cases[f"DINOv2-B/14 {size}px | backbone forward"] = inference(ivpt, images, autocast, disabled=True)
        cases[f"DINOv2-B/14 {size}px | IVPT inference"] = inference(ivpt, images, autocast)
        cases[f"DINOv2-B/14 {size}px | IVPT train step"] = train_step(ivpt, images, labels, autocast)
    if "clip" in args.families:
        names = [f"class number {i}" for i in range(args.classes)]
        clip_images = torch.randn(args.batch_size, 3, 224, 224, device=device)
        clip_labels = torch.randint(0, args.classes, (args.batch_size,), device=device)
        zero_shot = get_peft_model(clip_b16(args.depth), method_config("coop", names, args.depth)).to(device)
        cases[f"CLIP ViT-B/16, {args.classes} classes | zero-shot CLIP"] = inference(zero_shot, clip_images, autocast, disabled=True)
        for method in CLIP_METHODS:
            model = get_peft_model(clip_b16(args.depth), method_config(method, names, args.depth)).to(device)
            cases[f"CLIP ViT-B/16, {args.classes} classes | {method} inference"] = inference(model, clip_images, autocast)
            cases[f"CLIP ViT-B/16, {args.classes} classes | {method} train step"] = train_step(model, clip_images, clip_labels, autocast)
    return cases


def inference(model, images, autocast, disabled: bool = False):
    def run():
        model.eval()
        with torch.no_grad(), autocast():
            if disabled:
                with model.disable_adapter():
                    model(pixel_values=images)
            else:
                model(pixel_values=images)
        synchronize(images.device)

    return run


def train_step(model, images, labels, autocast):
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def run():
        model.train()
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            loss = model(pixel_values=images, labels=labels).loss
        loss.backward()
        optimizer.step()
        synchronize(images.device)

    return run


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cuda_added_peak_mib(run) -> float:
    run()
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    run()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - before) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reduced", action="store_true", help="CPU size: DINOv2 at 224 px, batch 2, 10 classes")
    parser.add_argument("--batch-size", type=int, default=None, help="default 32 (reduced: 2)")
    parser.add_argument("--classes", type=int, default=None, help="CLIP class names (default 100; reduced: 10)")
    parser.add_argument("--num-classes", type=int, default=200, help="IVPT classes (CUB: 200)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                        help="auto: bf16 autocast on a GPU that supports it, fp32 on a CPU")
    parser.add_argument("--families", nargs="+", choices=("ivpt", "clip"), default=["ivpt", "clip"])
    parser.add_argument("--output", default=None, help="also write the results as JSON")
    parser.add_argument("--depth", type=int, default=12, help="transformer blocks (fewer: a quick check that it runs)")
    args = parser.parse_args()
    args.batch_size = args.batch_size or (2 if args.reduced else 32)
    args.classes = args.classes or (10 if args.reduced else 100)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu" and os.environ.get("MALLOC_MMAP_THRESHOLD_") is None:
        os.execve(sys.executable, [sys.executable, *sys.argv], MMAP_ENV)  # resident memory = live memory
    bf16 = args.precision == "bf16" or (args.precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported())

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)

    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    start = time.perf_counter()
    cases = build_cases(args, device, autocast)
    seconds = interleaved_medians(cases, args.repeats)
    memory = {name: (cuda_added_peak_mib if device.type == "cuda" else added_peak_mib)(run) for name, run in cases.items()}
    print(f"{device_name}, {'bf16 autocast' if bf16 else 'fp32'}, batch {args.batch_size}, median of {args.repeats} "
          f"interleaved rounds, random weights\n")  # fmt: skip
    print("| backbone | case | images/s | vs plain | peak MiB added | vs plain |")
    print("| --- | --- | --- | --- | --- | --- |")
    results = []
    for name in cases:
        backbone, case = name.split(" | ")
        plain = next(other for other in cases if other.startswith(backbone + " | ") and
                     ("backbone forward" in other or "zero-shot" in other))  # fmt: skip
        rate, plain_rate = args.batch_size / seconds[name], args.batch_size / seconds[plain]
        results.append({"backbone": backbone, "case": case, "images_per_second": rate, "speed_vs_plain": rate / plain_rate,
                        "peak_mib": memory[name], "memory_vs_plain": memory[name] / max(memory[plain], 1e-9)})  # fmt: skip
        print(f"| {backbone} | {case} | {rate:.1f} | {rate / plain_rate:.2f} | {memory[name]:.0f} | "
              f"{memory[name] / max(memory[plain], 1e-9):.2f} |")
    print(f"\n({time.perf_counter() - start:.0f} s)")
    if args.output:
        with open(args.output, "w") as file:
            json.dump({"device": device_name, "bf16": bf16, "batch_size": args.batch_size, "reduced": args.reduced,
                       "results": results}, file, indent=2)  # fmt: skip


if __name__ == "__main__":
    main()
