"""How fast ConceptWorld generates images, on one core.

Prints two rates: the numpy renderer alone (`render_sample`: image, part masks, keypoints, attributes, caption),
and the whole `load_conceptworld` call, which also PNG-encodes the images into a `datasets.Dataset`.

    python benchmarks/conceptworld_speed.py [--num-images 2000] [--image-size 64]
"""

import argparse
import os
import time

# One core: keep BLAS / OpenMP from spreading the numpy work over several threads.
for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(variable, "1")

from peft_interp.data.conceptworld import (  # noqa: E402
    ConceptWorldConfig,
    all_classes,
    load_conceptworld,
    render_sample,
    sample_rng,
)


def renderer_rate(num_images: int, config: ConceptWorldConfig) -> float:
    """Images per second of `render_sample` alone, cycling over all classes."""
    classes = all_classes()
    render_sample(classes[0], sample_rng(0, "train", 0, 0), config)  # warm-up (grid caches)
    start = time.perf_counter()
    for index in range(num_images):
        class_id = index % len(classes)
        render_sample(classes[class_id], sample_rng(0, "train", class_id, index), config)
    return num_images / (time.perf_counter() - start)


def dataset_rate(num_images: int, config: ConceptWorldConfig) -> float:
    """Images per second of `load_conceptworld` (rendering + PNG encoding + Arrow table)."""
    start = time.perf_counter()
    load_conceptworld("pretraining", num_images=num_images, config=config)
    return num_images / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-images", type=int, default=2000)
    parser.add_argument("--image-size", type=int, default=64)
    args = parser.parse_args()
    config = ConceptWorldConfig(image_size=args.image_size)
    print(f"renderer:          {renderer_rate(args.num_images, config):8.0f} images/s at {args.image_size} px")
    print(f"load_conceptworld: {dataset_rate(args.num_images, config):8.0f} images/s at {args.image_size} px")


if __name__ == "__main__":
    main()
