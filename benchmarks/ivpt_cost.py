"""What IVPT costs on top of its backbone and next to VPT-deep, on real-size configs (random weights).

Backbones: DINOv2-B/14 with 4 registers and CLIP ViT-B/16 (vision tower), 224 px, batch 8, 200 classes.
Cases, per backbone:

* ``backbone forward``     the plain backbone (the IVPT model inside ``disable_adapter()``), ``no_grad``
* ``IVPT inference``       IVPT in eval mode, ``no_grad``
* ``VPT-deep train step``  forward + backward + Adam step (VPT-deep, prompts in all 12 blocks)
* ``IVPT train step``      the same for IVPT with ``equivariance_weight=0``
* ``IVPT train step + equivariance``  the paper's full objective (a second forward/backward pass)

Time: all cases of a backbone in one process, interleaved round-robin, median of ``--repeats`` rounds; memory: the
peak resident memory one run adds over what was held before it (model, optimizer state), each case in a fresh
process (see ``_measure.py``).

    python benchmarks/ivpt_cost.py [--repeats 5] [--batch-size 8]
"""

from __future__ import annotations

import argparse
import json

import _measure

CASES = ["backbone forward", "IVPT inference", "VPT-deep train step", "IVPT train step", "IVPT train step + equivariance"]
BASELINE = {case: "backbone forward" if i < 2 else "VPT-deep train step" for i, case in enumerate(CASES)}
BACKBONES = {"DINOv2-B/14-reg4": "dinov2_registers", "CLIP ViT-B/16": "clip_vision"}
NUM_CLASSES = 200
IMAGE_SIZE = 224


def build_backbone(kind: str):
    from transformers import CLIPVisionConfig, CLIPVisionModel, Dinov2WithRegistersConfig, Dinov2WithRegistersModel

    vit_b = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
    if kind == "dinov2_registers":
        config = Dinov2WithRegistersConfig(**vit_b, patch_size=14, image_size=IMAGE_SIZE, num_register_tokens=4)
        return Dinov2WithRegistersModel(config)
    return CLIPVisionModel(CLIPVisionConfig(**vit_b, patch_size=16, image_size=IMAGE_SIZE))


def build_cases(kind: str, batch_size: int, cases: list[str]) -> dict:
    """{case: a function running it once}, sharing one IVPT model (and one VPT-deep model) between cases."""
    import torch
    from peft import get_peft_model

    from peft_interp import IVPTConfig, VPTDeepConfig

    torch.manual_seed(0)
    images = torch.randn(batch_size, 3, IMAGE_SIZE, IMAGE_SIZE)
    labels = torch.randint(0, NUM_CLASSES, (batch_size,))
    ivpt = get_peft_model(build_backbone(kind), IVPTConfig(num_classes=NUM_CLASSES))
    vpt = get_peft_model(build_backbone(kind), VPTDeepConfig(num_classes=NUM_CLASSES)) if any("VPT" in c for c in cases) else None

    def inference(disabled: bool):
        def run():
            ivpt.eval()
            with torch.no_grad():
                if disabled:
                    with ivpt.disable_adapter():
                        ivpt(pixel_values=images)
                else:
                    ivpt(pixel_values=images)

        return run

    def train_step(model, equivariance_weight: float | None = None):
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)

        def run():
            if equivariance_weight is not None:
                model.peft_config["default"].equivariance_weight = equivariance_weight
            model.train()
            optimizer.zero_grad(set_to_none=True)
            model(pixel_values=images, labels=labels).loss.backward()
            optimizer.step()

        return run

    makers = {
        "backbone forward": lambda: inference(disabled=True),
        "IVPT inference": lambda: inference(disabled=False),
        "VPT-deep train step": lambda: train_step(vpt),
        "IVPT train step": lambda: train_step(ivpt, equivariance_weight=0.0),
        "IVPT train step + equivariance": lambda: train_step(ivpt, equivariance_weight=1.0),
    }
    return {case: makers[case]() for case in cases}


def time_cases(kind: str, repeats: int, batch_size: int) -> dict:
    return _measure.interleaved_medians(build_cases(kind, batch_size, CASES), repeats)


def peak_memory(kind: str, case: str, batch_size: int) -> float:
    return _measure.added_peak_mib(build_cases(kind, batch_size, [case])[case])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        task, kind, *rest = args.worker
        if task == "time":
            print(json.dumps(time_cases(kind, args.repeats, args.batch_size)))
        else:
            print(json.dumps(peak_memory(kind, rest[0], args.batch_size)))
        return

    common = ["--repeats", str(args.repeats), "--batch-size", str(args.batch_size)]
    print(f"batch {args.batch_size}, {IMAGE_SIZE} px, {NUM_CLASSES} classes, median of {args.repeats} interleaved runs (CPU)\n")
    header = f"{'backbone':<18} {'case':<32} {'time s':>8} {'ratio':>7} {'peak MiB':>9} {'ratio':>7}"
    print(header)
    print("-" * len(header))
    for label, kind in BACKBONES.items():
        seconds = _measure.run_worker(__file__, ["time", kind, *common])
        memory = {case: _measure.run_worker(__file__, ["memory", kind, case, *common], env=_measure.MMAP_ENV) for case in CASES}
        for case in CASES:
            base = BASELINE[case]
            print(
                f"{label:<18} {case:<32} {seconds[case]:>8.2f} {seconds[case] / seconds[base]:>7.2f} "
                f"{memory[case]:>9.0f} {memory[case] / memory[base]:>7.2f}"
            )
        print()
    print("ratio: against 'backbone forward' for the inference cases, 'VPT-deep train step' for the train steps.")
    print("targets: IVPT inference <= 1.15, IVPT train step (no equivariance) <= 1.3.")


if __name__ == "__main__":
    main()
