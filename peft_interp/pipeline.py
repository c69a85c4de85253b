"""The steps the command line and the demo share: base models, checks before any work, image transforms, dataset
splits, method configs, trained adapters and explanation pages. :mod:`peft_interp.cli` parses options and runs
commands from these; ``args`` below is its parsed options (``argparse.Namespace``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .data.preprocessing import image_transform
from .registry import NAMESPACE, method_spec, registered_methods

SHIPPED_MODELS = {"conceptworld-dinov2": "dinov2", "conceptworld-clip": "clip"}


# ------------------------------------------------------------------------------------------------- building
def method_config(method: str, class_names: list[str], settings: dict):
    """The PEFT config of ``method`` for ``class_names`` with ``settings`` (field -> value) applied
    (:meth:`peft_interp.registry.MethodSpec.make_config`), after checking that every setting is a config field."""
    spec = method_spec(method)
    fields = set(spec.config_class.__dataclass_fields__)
    unknown = sorted(set(settings) - fields)
    if unknown:
        raise SystemExit(f"--set: {spec.config_class.__name__} has no field {unknown}; fields: {sorted(fields)}")
    return spec.make_config(class_names, settings)


def load_backbone(name: str):
    """A shipped backbone (``conceptworld-dinov2`` / ``conceptworld-clip``, or ``peft-interp/...``, as adapters
    record them), a local folder or a Hub id."""
    from .shipped import load_default, shipped_backbone

    if shipped_backbone(name) is not None:
        return load_default(name)
    from transformers import AutoModel

    check_model_name(name)
    try:
        return AutoModel.from_pretrained(name, use_safetensors=True)
    except Exception as error:  # transformers / huggingface_hub raise many types
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        where = "the folder" if Path(name).expanduser().is_dir() else "the Hub"
        raise ValueError(f"--model {name!r} is not one of the shipped models ({', '.join(SHIPPED_MODELS)}) and "
                         f"could not be loaded from {where}: {first_line}") from error  # fmt: skip


def check_model_name(name: str) -> None:
    """Refuse a base model name that is neither shipped, nor a usable folder, nor shaped like a Hub id."""
    path = Path(name).expanduser()
    shipped = ", ".join(SHIPPED_MODELS)
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"--model {name}: is a file; expected a model folder (with config.json) or one of {shipped}")
        if not (path / "config.json").is_file():
            raise ValueError(f"--model {name}: the folder has no config.json, so it is not a Hugging Face model folder")
        if not any(path.glob("*.safetensors")) and not any(path.glob("*.safetensors.index.json")):
            raise ValueError(f"--model {name}: the folder has no .safetensors weights (pickled .bin weights are never "
                             "loaded)")  # fmt: skip
    elif name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep != "/" and os.sep in name:
        raise FileNotFoundError(f"--model {name}: no such folder (shipped models: {shipped})")


def check_adapter_folder(adapter: str) -> dict:
    """The parsed ``adapter_config.json`` of ``--adapter``, after checking that it is a peft-interp adapter."""
    folder = Path(adapter)
    if not folder.is_dir():
        raise FileNotFoundError(f"--adapter {adapter}: no such folder")
    config_file = folder / "adapter_config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"--adapter {adapter}: {config_file.name} not found, so it is not a saved adapter")
    try:
        config = json.loads(config_file.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{config_file} is not valid JSON: {error}") from error
    if not isinstance(config, dict) or not str(config.get("peft_type", "")).startswith(NAMESPACE):
        found = config.get("peft_type") if isinstance(config, dict) else type(config).__name__
        raise ValueError(f"{config_file}: peft_type {found!r} is not a peft-interp method ({', '.join(registered_methods())})")
    return config


def check_image_size(backbone, image_size: int | None, method: str, batch_size: int | None, training: bool) -> None:
    """``--image-size`` against the base model before any data is made: a multiple of the patch size for the
    visual methods, the model's own size for the CLIP methods, and within an estimate of the free memory."""
    from .validation import check_fits_in_memory

    vision = getattr(backbone.config, "vision_config", backbone.config)
    if image_size is None:
        return
    if method_spec(method).family == "clip" and image_size != vision.image_size:
        raise ValueError(f"--image-size {image_size}: the CLIP methods use the image tower's own input size "
                         f"{vision.image_size} (its position embeddings are fixed); omit --image-size")  # fmt: skip
    if image_size % vision.patch_size:
        raise ValueError(f"--image-size {image_size} is not a multiple of the model's patch size {vision.patch_size}, "
                         f"e.g. {max(vision.patch_size, image_size - image_size % vision.patch_size)}")  # fmt: skip
    check_fits_in_memory(vision, image_size, batch_size or 1, "--image-size", training=training)


def check_classes_match(adapter_config: dict, names: list[str], adapter: str) -> None:
    """An adapter scores the classes it was trained on: the dataset must have as many (and, when the adapter
    names them, the same names), or the accuracy printed would be meaningless."""
    saved = adapter_config.get("class_names")
    count = adapter_config.get("num_classes") or (len(saved) if saved else None)
    if count is not None and count != len(names):
        raise ValueError(f"--adapter {adapter} scores {count} classes but the dataset has {len(names)} "
                         f"({names[:5]}{'...' if len(names) > 5 else ''}): evaluate it on the classes it was trained on")  # fmt: skip
    if saved and list(saved) != list(names):
        differ = [(a, b) for a, b in zip(saved, names) if a != b]
        raise ValueError(f"--adapter {adapter} was trained on classes named differently from the dataset's (adapter vs "
                         f"dataset: {differ[:3]}); give --class-names in the adapter's order")  # fmt: skip


# --------------------------------------------------------------------------------------------------- data
def load_split(args, split: str, shots: int | None, seed: int, image_size: int, classes: str | None = None):
    """(dataset, class names, columns), checked before use; ``classes`` "base" / "novel" keeps the first / second
    half of the label ids (base-to-novel protocol), relabelled from 0."""
    from .training.data import (
        Columns,
        base_novel_classes,
        dataset_class_names,
        few_shot,
        load_image_dataset,
        select_classes,
        validate_image_dataset,
    )

    columns = Columns(args.image_column, args.label_column, args.attribute_column)
    conceptworld = args.dataset == "conceptworld"
    dataset = load_image_dataset(args.dataset, split, shots=shots if conceptworld else None, seed=seed,
                                 image_size=image_size if conceptworld else None)  # fmt: skip
    names = dataset_class_names(dataset, columns, args.class_names)
    validate_image_dataset(dataset, columns, names, check_images=not conceptworld)
    classes = classes or args.classes
    if classes != "all":
        ids = base_novel_classes(len(names))[0 if classes == "base" else 1]
        dataset, names = select_classes(dataset, ids, columns.label), [names[i] for i in ids]
    if shots and not conceptworld:
        dataset = few_shot(dataset, shots, seed, columns.label)
    return dataset, names, columns


def label_attributes(args, backbone, transform, dataset, names, columns, config):
    """IntCoOp's attribute word per training image, from ``--attribute-source`` (or ``--attribute-column``); says
    which labeller it used. Refuses to train without one: IntCoOp's attribute loss rests on them."""
    from dataclasses import replace

    import torch

    from .training.data import open_image
    from .tuners.clip_prompt.model import load_tokenizer
    from .tuners.intcoop.attributes import ATTRIBUTE_SOURCES, WithClassNames, add_attribute_column, attribute_source_from_spec

    spec = args.attribute_source or (f"column:{args.attribute_column}" if args.attribute_column else None)
    if spec is None:
        raise SystemExit(f"--method {args.method} trains IntCoOp's attribute extractor on one attribute word per "
                         f"training image: give --attribute-source ({ATTRIBUTE_SOURCES})")  # fmt: skip
    if args.attribute_source and args.attribute_column:
        raise SystemExit("give --attribute-source or --attribute-column, not both")

    def pixels(images: list) -> torch.Tensor:
        return torch.stack([transform(open_image(image)) for image in images])

    try:
        source, column, description = attribute_source_from_spec(
            spec, backbone, load_tokenizer(config.tokenizer_name_or_path), pixels, args.attribute_id_column)
    except ValueError as error:
        raise SystemExit(f"--attribute-source: {error}") from None
    if source is None:
        if column not in dataset.column_names:
            raise SystemExit(f"--attribute-source {spec}: no column {column!r}; the dataset has {dataset.column_names}")
    else:
        if spec.startswith("file:") and args.attribute_id_column not in dataset.column_names:
            raise SystemExit(f"--attribute-source {spec}: the label file is keyed by image ids, but the dataset has no "
                             f"column {args.attribute_id_column!r} (choose it with --attribute-id-column)")  # fmt: skip
        column = "attribute" if "attribute" not in dataset.column_names else "attribute_label"
        dataset = add_attribute_column(dataset, WithClassNames(source, names, columns.label), column=column)
    labelled = sum(1 for word in dataset[column] if word)
    print(f"IntCoOp attributes: {description}; {labelled} of {len(dataset)} training images have a word")
    if labelled == 0:
        raise SystemExit(f"--attribute-source {spec}: no training image got an attribute word")
    return dataset, replace(columns, attribute=column)


# ------------------------------------------------------------------------------------------------- adapters
def load_trained(adapter: str, model: str | None):
    """(PeftModel, base model name) of a saved adapter on its base model."""
    from peft import PeftModel

    config = check_adapter_folder(adapter)
    name = model or config.get("base_model_name_or_path")
    if name is None:
        raise SystemExit(f"{adapter}: the adapter does not name its base model; give --model")
    return PeftModel.from_pretrained(load_backbone(name), adapter).eval(), name


def explain_rows(model, rows, transform, output_dir, class_names: list[str], columns=None, title=None) -> Path:
    """Explanation PNGs and ``index.html`` (:func:`peft_interp.reports.write_explanations`) for dataset ``rows``."""
    from .reports import write_explanations
    from .training.data import Columns, open_image

    columns = columns or Columns()
    pictures, pixel_values = transform.pictures_and_pixels([open_image(image) for image in rows[columns.image]])
    return write_explanations(model, pixel_values, pictures, output_dir, labels=list(rows[columns.label]),
                              class_names=class_names, max_images=len(pictures), title=title)  # fmt: skip


def checked_transform(model, args):
    """The image transform of a loaded adapter, after checking ``--image-size`` against the adapter's size."""
    config = model.peft_config[model.active_adapter]
    saved = getattr(config, "image_size", None)
    if args.image_size is not None and saved is not None and args.image_size != saved:
        raise ValueError(f"--image-size {args.image_size}: the adapter was built for {saved} px inputs; omit --image-size")
    check_image_size(model.base_model.model, args.image_size, config.method_name, args.batch_size, training=False)
    return image_transform(model.base_model.model, args.image_size or saved)


def explain_indices(model, dataset, transform, columns, args) -> list[int]:
    """``--num-images`` rows spread over the classes by ``--seed`` (:func:`peft_interp.reports.sample_indices`);
    with ``--misclassified`` only images the model gets wrong (one prediction pass over the split first)."""
    from .reports import sample_indices

    labels = dataset[columns.label]
    predictions = None
    if args.misclassified:
        from .training.data import ImageCollator
        from .evaluation.runner import predict

        predictions, _ = predict(model, dataset, ImageCollator(transform, columns), args.batch_size)
    indices = sample_indices(labels, args.num_images, args.seed, predictions, misclassified=args.misclassified)
    if not indices:
        raise SystemExit(f"explain --misclassified: the model gets every image of {args.split!r} right; nothing to show")
    return indices
