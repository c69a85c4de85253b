"""What IVPT costs on top of its backbone and next to VPT-deep, on real-size configs (random weights).

Backbones: DINOv2-B/14 with 4 registers and CLIP ViT-B/16 (vision tower), 224 px, batch 8, 200 classes.
Measured, per backbone, each case in a fresh subprocess:

* ``backbone forward``   the plain model, ``torch.no_grad``            (baseline of the inference ratio)
* ``IVPT inference``     IVPT in eval mode, ``torch.no_grad``
* ``VPT-deep train step`` forward + backward + Adam step              (baseline of the train-step ratios)
* ``IVPT train step``     the same, ``equivariance_weight=0``
* ``IVPT train step + equivariance`` the paper's full objective (two forward/backward passes)

Time is the median of ``--repeats`` runs after one warm-up; memory is the peak resident memory added during one
run (Linux VmHWM, reset before measuring) over the memory held before them (model, optimizer state),
with glibc told to unmap every large block on free so that resident memory follows live memory. Absolute CPU times are
noisy; the ratios, measured in the same run, are the result. Usage::

    python benchmarks/ivpt_cost.py [--repeats 3] [--batch-size 8]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time

CASES = ["backbone forward", "IVPT inference", "VPT-deep train step", "IVPT train step", "IVPT train step + equivariance"]
BACKBONES = {
    "DINOv2-B/14-reg4": "dinov2_registers",
    "CLIP ViT-B/16": "clip_vision",
}
NUM_CLASSES = 200
IMAGE_SIZE = 224


def build_backbone(kind: str):
    from transformers import CLIPVisionConfig, CLIPVisionModel, Dinov2WithRegistersConfig, Dinov2WithRegistersModel

    vit_b = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
    if kind == "dinov2_registers":
        return Dinov2WithRegistersModel(
            Dinov2WithRegistersConfig(**vit_b, patch_size=14, image_size=IMAGE_SIZE, num_register_tokens=4)
        )
    return CLIPVisionModel(CLIPVisionConfig(**vit_b, patch_size=16, image_size=IMAGE_SIZE))


def rss_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1])
    raise RuntimeError(field)


def measure(kind: str, case: str, repeats: int, batch_size: int) -> dict:
    """Run one case in this process; returns {"seconds": median, "peak_mib": added peak RSS of one run}."""
    import torch
    from peft import get_peft_model

    from peft_interp import IVPTConfig, VPTDeepConfig

    torch.manual_seed(0)
    model = build_backbone(kind)
    if case.startswith("IVPT"):
        equivariance = 1.0 if "equivariance" in case else 0.0
        model = get_peft_model(model, IVPTConfig(num_classes=NUM_CLASSES, equivariance_weight=equivariance))
    elif case.startswith("VPT"):
        model = get_peft_model(model, VPTDeepConfig(num_classes=NUM_CLASSES))
    images = torch.randn(batch_size, 3, IMAGE_SIZE, IMAGE_SIZE)
    labels = torch.randint(0, NUM_CLASSES, (batch_size,))

    if "train step" in case:
        model.train()
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)

        def step():
            optimizer.zero_grad(set_to_none=True)
            model(pixel_values=images, labels=labels).loss.backward()
            optimizer.step()

    else:
        model.eval()

        def step():
            with torch.no_grad():
                model(pixel_values=images)

    return timed(step, repeats)


def timed(step, repeats: int) -> dict:
    step()  # warm-up (also allocates Adam state)
    gc.collect()
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # reset the peak-RSS counter (VmHWM)
    before = rss_kib("VmRSS")
    step()
    peak_mib = (rss_kib("VmHWM") - before) / 1024
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - start)
    return {"seconds": statistics.median(seconds) if seconds else None, "peak_mib": peak_mib}


def run_worker(kind: str, case: str, repeats: int, batch_size: int, env: dict | None = None) -> dict:
    command = [sys.executable, __file__, "--worker", kind, case, "--repeats", str(repeats), "--batch-size", str(batch_size)]
    result = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_case(kind: str, case: str, repeats: int, batch_size: int) -> dict:
    """Memory and time of one case, each from a fresh process.

    Memory runs with a fixed glibc mmap threshold, so every large tensor is returned to the OS when freed and
    resident memory follows live memory; time runs with the default allocator (the fixed threshold slows it).
    """
    mmap_env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(64 * 1024)}
    return {
        "peak_mib": run_worker(kind, case, 0, batch_size, env=mmap_env)["peak_mib"],
        "seconds": run_worker(kind, case, repeats, batch_size)["seconds"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--worker", nargs=2, metavar=("KIND", "CASE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(*args.worker, repeats=args.repeats, batch_size=args.batch_size)))
        return

    print(f"batch {args.batch_size}, {IMAGE_SIZE} px, {NUM_CLASSES} classes, median of {args.repeats} (CPU)\n")
    header = f"{'backbone':<18} {'case':<32} {'time s':>8} {'ratio':>7} {'peak MiB':>9} {'ratio':>7}"
    print(header)
    print("-" * len(header))
    for label, kind in BACKBONES.items():
        results = {case: run_case(kind, case, args.repeats, args.batch_size) for case in CASES}
        for case in CASES:
            baseline = results["backbone forward" if case.endswith(("forward", "inference")) else "VPT-deep train step"]
            row = results[case]
            print(
                f"{label:<18} {case:<32} {row['seconds']:>8.2f} {row['seconds'] / baseline['seconds']:>7.2f} "
                f"{row['peak_mib']:>9.0f} {row['peak_mib'] / max(baseline['peak_mib'], 1e-9):>7.2f}"
            )
        print()
    print("ratios: inference cases vs 'backbone forward'; train steps vs 'VPT-deep train step'.")
    print("targets: IVPT inference <= 1.15, IVPT train step (no equivariance) <= 1.3.")


if __name__ == "__main__":
    main()
