"""Pretrains the tiny CLIP and DINOv2 shipped in `peft_interp/checkpoints/`, from scratch, on a CPU.

Both are trained on ConceptWorld's pretraining split only (see `scripts/pretrain.py` for the objectives):

    python examples/pretrain_backbones.py                         # both, into peft_interp/checkpoints/
    python examples/pretrain_backbones.py --models clip --output-dir outputs/backbones

Each model's folder gets the weights (float16 safetensors), its config, its image processor (and, for CLIP, the
tokenizer), and `pretraining.json`: seed, ConceptWorld config, settings, per-epoch losses (and, for CLIP, per-epoch
zero-shot attribute accuracy on the held-out last `--monitor-images` pretraining images), wall-clock times, library
versions and thread count. The folder is rewritten after every epoch (`"epochs_done"` says how far it got), so an
interrupted run leaves a usable model. The run is deterministic for a given seed, thread count and machine.
"""

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path

import torch
import transformers

from peft_interp.data.conceptworld import ConceptWorldConfig
from peft_interp.data.tokenizer import load_clip_tokenizer
from peft_interp.shipped import CHECKPOINTS_DIR, DEFAULT_BACKBONES

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: scripts/ is not installed
from scripts.pretrain import (  # noqa: E402
    PretrainingSettings,
    attribute_zero_shot,
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

    held_out = slice(len(data.images) - settings.monitor_images, len(data.images))
    train_data, monitor_data = data.subset(slice(0, held_out.start)), data.subset(held_out)

    for name in args.models:
        directory = args.output_dir / FOLDERS[name]
        tokenizer = load_clip_tokenizer() if name == "clip" else None
        monitor: list[dict] = []
        start = time.perf_counter()

        def save(model, epoch: int, losses: list[float]) -> None:
            if name == "clip":
                monitor.append(attribute_zero_shot(model, monitor_data.images, monitor_data.attributes))
                print(f"[clip] held-out zero-shot attribute accuracy: {monitor[-1]}", flush=True)
            save_backbone(model, directory, image_processor(name, settings.image_size), tokenizer)
            info = {
                "model": name,
                "split": "pretraining",
                "seed": settings.seed,
                "settings": asdict(settings),
                "conceptworld_config": asdict(conceptworld_config),
                "epochs_done": epoch + 1,
                "epoch_losses": losses,
                **({"held_out_attribute_zero_shot": monitor} if monitor else {}),
                "num_parameters": sum(parameter.numel() for parameter in model.parameters()),
                "wall_clock_seconds": {
                    "rendering_images": round(rendering_seconds, 1),  # shared by both models
                    "training": round(time.perf_counter() - start, 1),
                },
                "environment": environment(args.threads),
            }
            (directory / "pretraining.json").write_text(json.dumps(info, indent=2) + "\n", "utf-8")

        train = train_clip if name == "clip" else train_dinov2
        train(train_data, settings, on_epoch_end=save)
        print(f"[{name}] trained in {time.perf_counter() - start:.0f} s, saved to {directory}", flush=True)


if __name__ == "__main__":
    main()
