"""Pretrains the tiny CLIP and DINOv2 shipped in `peft_interp/checkpoints/`, from scratch, on a CPU.

Both are trained on ConceptWorld's pretraining split only (see `peft_interp/pretrain.py` for the objectives):

    python examples/pretrain_backbones.py                         # both, into peft_interp/checkpoints/
    python examples/pretrain_backbones.py --models clip --output-dir outputs/backbones

Each model's folder gets the weights (float16 safetensors), its config, its image processor (and, for CLIP, the
tokenizer), and `pretraining.json`: seed, ConceptWorld config, settings, per-epoch losses, wall-clock times, library
versions and thread count. The run is deterministic for a given seed, thread count and machine.
"""

import argparse
import json
import os
import platform
import time
from dataclasses import asdict, fields
from pathlib import Path

import torch
import transformers

from peft_interp.data.conceptworld import ConceptWorldConfig
from peft_interp.data.tokenizer import load_clip_tokenizer
from peft_interp.hub import CHECKPOINTS_DIR, DEFAULT_BACKBONES
from peft_interp.pretrain import (
    PretrainingSettings,
    image_processor,
    render_pretraining_images,
    save_backbone,
    train_clip,
    train_dinov2,
)


FOLDERS = {"clip": "conceptworld-clip", "dinov2": "conceptworld-dinov2"}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=DEFAULT_BACKBONES, default=list(DEFAULT_BACKBONES))
    parser.add_argument("--output-dir", type=Path, default=CHECKPOINTS_DIR)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    defaults = PretrainingSettings()
    for field in fields(PretrainingSettings):  # --seed, --num-images, --clip-epochs, ...
        default = getattr(defaults, field.name)
        parser.add_argument(f"--{field.name.replace('_', '-')}", type=type(default), default=default)
    return parser.parse_args()


def environment(threads: int) -> dict:
    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": threads,
    }


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    settings = PretrainingSettings(**{field.name: getattr(args, field.name) for field in fields(PretrainingSettings)})
    conceptworld_config = ConceptWorldConfig(image_size=settings.image_size)

    start = time.perf_counter()
    data = render_pretraining_images(settings.num_images, settings.seed, conceptworld_config)
    rendering_seconds = time.perf_counter() - start
    print(f"rendered {len(data.images)} pretraining images in {rendering_seconds:.0f} s", flush=True)

    for name in args.models:
        start = time.perf_counter()
        model, losses = train_clip(data, settings) if name == "clip" else train_dinov2(data, settings)
        training_seconds = time.perf_counter() - start

        directory = args.output_dir / FOLDERS[name]
        tokenizer = load_clip_tokenizer() if name == "clip" else None
        save_backbone(model, directory, image_processor(name, settings.image_size), tokenizer)
        info = {
            "model": name,
            "split": "pretraining",
            "seed": settings.seed,
            "settings": asdict(settings),
            "conceptworld_config": asdict(conceptworld_config),
            "epoch_losses": losses,
            "num_parameters": sum(parameter.numel() for parameter in model.parameters()),
            "wall_clock_seconds": {
                "rendering_images": round(rendering_seconds, 1),  # shared by both models
                "training": round(training_seconds, 1),
            },
            "environment": environment(args.threads),
        }
        (directory / "pretraining.json").write_text(json.dumps(info, indent=2) + "\n", "utf-8")
        print(f"[{name}] trained in {training_seconds:.0f} s, saved to {directory}", flush=True)


if __name__ == "__main__":
    main()
