"""peft-interp: train, evaluate and explain interpretable prompt adapters from the command line.

    peft-interp demo                                   # the whole pipeline on the shipped backbones, a few minutes
    peft-interp train --method ivpt --model conceptworld-dinov2 --dataset conceptworld --split base_train \\
        --shots 16 --output-dir runs/ivpt
    peft-interp evaluate --adapter runs/ivpt/adapter --dataset conceptworld --split base_test --parts
    peft-interp explain --adapter runs/ivpt/adapter --dataset conceptworld --split base_test --output-dir explain
    peft-interp benchmark --method coop --protocol base_to_novel --datasets coop11 --data-root $DATA \\
        --model openai/clip-vit-base-patch16 --output-dir bench/coop   # the papers' tables, resumable

Every option can also come from a YAML or JSON file (--config run.yaml; keys are the option names, flags given on
the command line win). Method settings (fields of the method's config, e.g. IVPTConfig) go in --set key=value, or
under `method_settings:` in the file: --set num_context_tokens=4 --set template="a photo of a {}."
Run `peft-interp COMMAND --help` for the options of a command.

Bad input stops before any work with one line naming the flag, field or file (exit status 2 for flags, 1 for the
rest; --debug shows the traceback). Ctrl-C during training names the checkpoint to resume from (exit status 130).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from .benchmark import PROTOCOLS, BenchmarkConfig, run_benchmark
from .demo import run_demo
from .pipeline import (
    check_classes_match,
    check_image_size,
    checked_transform,
    explain_indices,
    explain_rows,
    image_transform,
    label_attributes,
    load_backbone,
    load_split,
    load_trained,
    method_config,
)
from .registry import method_spec, registered_methods


# ------------------------------------------------------------------------------------------------- settings
def parse_settings(pairs: list[str]) -> dict:
    """``["a=1", "b=[1, 2]", "c=text"]`` -> ``{"a": 1, "b": [1, 2], "c": "text"}`` (values parsed as YAML)."""
    import yaml

    settings = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set expects key=value, got {pair!r}")
        settings[key.strip()] = yaml.safe_load(value)
    return settings


# ----------------------------------------------------------------------------------------------- commands
def train_command(args) -> Path:
    """Train an adapter; returns the folder of the final adapter."""
    from peft import get_peft_model

    from .training import ImageCollator, InterpTrainer, TrainingArguments
    from .training.augment import recipe_train_transform

    from .training.checkpoint import claim_output_dir

    claim_output_dir(args.output_dir, args.resume or False, args.overwrite_output_dir, dry_run=True)
    backbone = load_backbone(args.model)
    check_image_size(backbone, args.image_size, args.method, args.batch_size, training=True)
    transform = image_transform(backbone, args.image_size)
    dataset, names, columns = load_split(args, args.split, args.shots, args.seed, transform.image_size)
    eval_rows = None
    if args.eval_steps:  # the validation split, same classes; CoOp's protocol: min(K, 4) shots per class
        eval_shots = min(args.shots, 4) if args.shots and args.eval_shots is None else args.eval_shots
        eval_set, _, _ = load_split(args, args.eval_split, eval_shots, args.seed, transform.image_size)
        eval_rows = eval_set.select_columns(columns.names())
    settings = {**(args.method_settings or {}), **parse_settings(args.set)}
    if method_spec(args.method).family == "vision":
        settings.setdefault("image_size", transform.image_size)
    config = method_config(args.method, names, settings)
    if getattr(config, "attribute_loss_weight", None) is not None:  # IntCoOp, or IPL over IntCoOp
        dataset, columns = label_attributes(args, backbone, transform, dataset, names, columns, config)
    import torch

    torch.manual_seed(args.seed)
    model = get_peft_model(backbone, config)
    model.print_trainable_parameters()
    training_args = TrainingArguments(
        output_dir=args.output_dir, max_steps=args.max_steps, epochs=args.epochs, batch_size=args.batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps, learning_rate=args.learning_rate,
        warmup_epochs=args.warmup_epochs, max_grad_norm=args.max_grad_norm, mixed_precision=args.mixed_precision,
        save_steps=args.save_steps, save_total_limit=args.save_total_limit, logging_steps=args.logging_steps,
        seed=args.seed, num_workers=args.num_workers, report_to=args.report_to,
        resume_from_checkpoint=args.resume or False, eval_steps=args.eval_steps,
        overwrite_output_dir=args.overwrite_output_dir,
    )  # fmt: skip
    training_rows = dataset.select_columns(columns.names())  # decode only what the model reads
    train_transform = transform
    if args.augment:  # the method's recipe augmentation, for training only
        train_transform = recipe_train_transform(args.method, transform.image_size, transform.mean, transform.std)
    trainer = InterpTrainer(model, training_args, training_rows, ImageCollator(train_transform, columns),
                            eval_dataset=eval_rows, eval_collate_fn=ImageCollator(transform, columns))  # fmt: skip
    output = trainer.train()
    if trainer.accelerator.is_main_process:
        print(f"trained {output.steps} steps in {output.seconds:.0f} s ({output.images_per_second:.1f} img/s), "
              f"last loss {output.loss:.4f}; adapter: {output.adapter_dir}")  # fmt: skip
        if output.best_adapter_dir is not None:
            print(f"best validation accuracy {output.best_metric:.4f}: {output.best_adapter_dir}")
        if args.push_to_hub:
            push_trained(trainer.accelerator.unwrap_model(trainer.model), output, args)
    return output.adapter_dir


def push_trained(model, output, args) -> None:
    """Upload the trained adapter (the best evaluated one when there is one) with its explanation and model card
    through :func:`peft_interp.sharing.push_adapter`."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    from .sharing import push_adapter

    metrics = {}
    if output.best_adapter_dir is not None:
        set_peft_model_state_dict(model, load_file(output.best_adapter_dir / "adapter_model.safetensors"))
        metrics["validation_accuracy"] = output.best_metric
    commit = push_adapter(model, args.push_to_hub, private=args.hub_private, metrics=metrics, dataset=args.dataset)
    print(f"pushed to https://huggingface.co/{args.push_to_hub} ({getattr(commit, 'oid', commit)})")


def evaluate_command(args) -> dict:
    from .training.data import ImageCollator
    from .evaluation.runner import (
        evaluate_accuracy,
        evaluate_base_to_novel,
        evaluate_parts,
    )

    model, _ = load_trained(args.adapter, args.model)
    transform = checked_transform(model, args)
    dataset, names, columns = load_split(args, args.split, None, args.seed, transform.image_size)
    adapter_config = json.loads((Path(args.adapter) / "adapter_config.json").read_text())
    if not args.base_to_novel:
        check_classes_match(adapter_config, names, args.adapter)
    collator = ImageCollator(transform, columns)
    if args.novel_split or args.base_to_novel:
        if args.base_to_novel:  # one split, its classes halved by the protocol
            dataset, base_names, _ = load_split(args, args.split, None, args.seed, transform.image_size, classes="base")
            check_classes_match(adapter_config, base_names, args.adapter)
        novel_split = args.novel_split or args.split
        novel_classes = "novel" if args.base_to_novel else "all"
        novel, novel_names, _ = load_split(args, novel_split, None, args.seed, transform.image_size, novel_classes)
        results = evaluate_base_to_novel(model, dataset, novel, novel_names, collator, args.batch_size)
    elif args.parts:  # accuracy included
        from .data import PART_NAMES

        names = list(PART_NAMES) if args.dataset == "conceptworld" else None
        if args.dataset.startswith("cub:"):  # EvalProtoPNet: box crops resized to the input size, keypoints mapped
            from .datasets import BOX_COLUMN, cub_part_protocol

            dataset = cub_part_protocol(dataset, transform.image_size)
            collator = ImageCollator(transform, columns, box_column=BOX_COLUMN)
        results = evaluate_parts(model, dataset, collator, args.batch_size, part_names=names)
    else:
        results = evaluate_accuracy(model, dataset, collator, args.batch_size)
    print(json.dumps(results, indent=2))
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2))
    return results


def explain_command(args) -> Path:
    model, _ = load_trained(args.adapter, args.model)
    transform = checked_transform(model, args)
    dataset, names, columns = load_split(args, args.split, None, args.seed, transform.image_size)
    check_classes_match(json.loads((Path(args.adapter) / "adapter_config.json").read_text()), names, args.adapter)
    rows = dataset.select(explain_indices(model, dataset, transform, columns, args))
    index = explain_rows(model, rows, transform, args.output_dir, names, columns, args.title)
    print(f"explanations: {index}")
    return index


def benchmark_command(args) -> dict:
    """Run a method over a suite with a paper's protocol; prints the table (also in OUTPUT_DIR/table.md, .json)."""
    default_datasets = {"cross_dataset": ["cross_dataset_targets"], "domain_generalization": ["imagenet_shifts"]}
    training = {"max_steps": args.max_steps, "epochs": args.epochs, "batch_size": args.batch_size,
                "learning_rate": args.learning_rate, "save_steps": args.save_steps,
                "mixed_precision": args.mixed_precision}  # fmt: skip
    try:
        config = BenchmarkConfig(
            method=args.method, protocol=args.protocol,
            datasets=args.datasets or default_datasets.get(args.protocol, ["conceptworld"]),
            output_dir=args.output_dir or f"benchmark-runs/{args.method}-{args.protocol}", data_root=args.data_root,
            model=args.model, seeds=args.seeds, shots=args.shots, source=args.source, image_size=args.image_size,
            max_test_per_class=args.max_test_per_class, augment=args.augment,
            training={key: value for key, value in training.items() if value is not None},
            method_settings=parse_settings(args.set), batch_size_eval=args.eval_batch_size,
        )  # fmt: skip
    except ValueError as error:
        raise SystemExit(f"benchmark: {error}") from error
    table = run_benchmark(config)
    print((Path(config.output_dir) / "table.md").read_text())
    return table


def demo_command(args) -> None:
    run_demo(Path(args.output_dir), steps=args.steps, seed=args.seed)


# ------------------------------------------------------------------------------------------------- parsing
def _data_options(parser: argparse.ArgumentParser, split_help: str) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--dataset", default="conceptworld",
                       help="'conceptworld' (built in, offline), 'imagefolder:PATH' / a folder, NAME:FOLDER for a "
                            "dataset in its documented layout (caltech101, oxford_pets, ..., imagenet_r, cub), or a Hub "
                            "dataset id")
    group.add_argument("--split", default=split_help, help=f"dataset split (default {split_help})")
    group.add_argument("--image-column", default="image")
    group.add_argument("--label-column", default="label")
    group.add_argument("--attribute-column", default=None, help="IntCoOp attribute words (same as "
                       "--attribute-source column:NAME)")
    group.add_argument("--class-names", nargs="+", default=None,
                       help="one name per label id, when the label column is not a ClassLabel")
    group.add_argument("--image-size", type=int, default=None, help="input size (default: the model's)")
    group.add_argument("--classes", choices=("all", "base", "novel"), default="all",
                       help="base / novel: only the first / second half of the label ids (base-to-novel protocol)")
    group.add_argument("--seed", type=int, default=0)  # fmt: skip
    _debug_option(parser)


def _debug_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the full traceback of an error instead of one line")  # fmt: skip


def _save_total_limit(value: str) -> int | None:
    """``--save-total-limit``: an int, or ``none`` / ``all`` to keep every checkpoint."""
    if value.strip().lower() in ("none", "all"):
        return None
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1 or 'none', got {value!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="peft-interp", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="train, evaluate and explain IVPT and IPL against VPT-deep and CoOp on "
                               "ConceptWorld with the shipped backbones (a few minutes on a CPU)")  # fmt: skip
    demo.add_argument("--output-dir", default="outputs/demo")
    demo.add_argument("--steps", type=int, default=None, help="optimiser steps per method (default: the demo's)")
    demo.add_argument("--seed", type=int, default=0)
    _debug_option(demo)

    train = commands.add_parser("train", help="train an adapter on an image dataset")
    train.add_argument("--config", default=None, help="YAML/JSON file with any of these options")
    train.add_argument("--method", choices=tuple(registered_methods()), required=False, help="the method to train")
    train.add_argument("--model", default=None,
                       help="base model: conceptworld-dinov2, conceptworld-clip (shipped), a folder or a Hub id")
    _data_options(train, "base_train")
    train.add_argument("--shots", type=int, default=None, help="images per class (few-shot), all when omitted")
    train.add_argument("--attribute-source", default=None,
                       help="IntCoOp (required for it): who gives each training image its attribute word: column:NAME, "
                       "file:PATH (JSON {id: word} / CSV id,attribute), zero-shot[:ADJECTIVES_FILE] (zero-shot CLIP), "
                       "blip2[:CHECKPOINT] (needs the checkpoint locally or the Hub) or conceptworld (ground truth)")
    train.add_argument("--attribute-id-column", default="id", help="image-id column that file:PATH labels refer to")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a method config field")
    train.add_argument("--output-dir", default=None, help="checkpoints and the final adapter (default runs/METHOD)")
    group = train.add_argument_group("optimisation (defaults: the method's paper recipe)")
    group.add_argument("--max-steps", type=int, default=None)
    group.add_argument("--epochs", type=float, default=None)
    group.add_argument("--batch-size", type=int, default=None, help="per process")
    group.add_argument("--gradient-accumulation-steps", type=int, default=1)
    group.add_argument("--learning-rate", type=float, default=None)
    group.add_argument("--warmup-epochs", type=float, default=None)
    group.add_argument("--max-grad-norm", type=float, default=None)
    group.add_argument("--mixed-precision", choices=("no", "bf16", "fp16"), default="no")
    group.add_argument("--num-workers", type=int, default=0)
    group.add_argument("--report-to", default="auto",
                       help="an Accelerate tracker (tensorboard, wandb, ...); default: tensorboard if installed")
    group = train.add_argument_group("checkpoints")
    group.add_argument("--save-steps", type=int, default=0, help="checkpoint every N steps (0: at the end only)")
    group.add_argument("--save-total-limit", type=_save_total_limit, default=2,
                       help="keep the newest N checkpoints of this run ('none': all); others' are never deleted")
    group.add_argument("--overwrite-output-dir", action="store_true",
                       help="start a new run in a non-empty --output-dir (files there are kept; checkpoints and "
                       "adapter/ of the same names are replaced)")
    group.add_argument("--logging-steps", type=int, default=10)
    group.add_argument("--resume", nargs="?", const=True, default=None,
                       help="resume from the newest checkpoint in --output-dir, or from the given folder")  # fmt: skip
    group = train.add_argument_group("evaluation during training, augmentation, sharing")
    group.add_argument("--eval-steps", type=int, default=0,
                       help="evaluate accuracy on --eval-split every N steps; the best adapter is kept in "
                            "OUTPUT_DIR/best-adapter (0: never)")
    group.add_argument("--eval-split", default="val", help="validation split for --eval-steps (default val)")
    group.add_argument("--eval-shots", type=int, default=None,
                       help="validation images per class (default: min(--shots, 4) as CoOp; all without --shots)")
    group.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True,
                       help="the method's recipe augmentation on the training images (default on; --no-augment)")
    group.add_argument("--push-to-hub", default=None, metavar="REPO_ID",
                       help="upload the adapter (the best one with --eval-steps) with its explanation and model card")
    group.add_argument("--hub-private", action="store_true", help="create the Hub repository as private")

    bench = commands.add_parser("benchmark", help="a method over a suite of datasets with a paper's protocol, "
                                "resumable; writes the paper-format table (Markdown and JSON)")  # fmt: skip
    bench.add_argument("--method", choices=(*registered_methods(), "zero_shot"), required=True)
    bench.add_argument("--protocol", choices=PROTOCOLS, required=True)
    bench.add_argument("--datasets", nargs="+", default=None,
                       help="dataset names (caltech101, cub, ...), suites (coop11, imagenet_shifts) or conceptworld; "
                            "cross-dataset protocols: the targets (default: the paper's)")
    bench.add_argument("--data-root", default=None, help="the folder holding the datasets in CoOp's layout ($DATA)")
    bench.add_argument("--model", default=None, help="base model (default: the shipped ConceptWorld backbone)")
    bench.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    bench.add_argument("--shots", type=int, nargs="+", default=None,
                       help="images per class (default 16; few_shot: 1 2 4 8 16)")
    bench.add_argument("--source", default="imagenet", help="training dataset of the cross-dataset protocols")
    bench.add_argument("--image-size", type=int, default=None, help="input size (default: the model's)")
    bench.add_argument("--max-test-per-class", type=int, default=None, help="evaluate on fewer test images (quick runs)")
    bench.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a method config field")
    bench.add_argument("--output-dir", default=None, help="results, runs and tables (default benchmark-runs/METHOD-PROTOCOL)")
    bench.add_argument("--max-steps", type=int, default=None)
    bench.add_argument("--epochs", type=float, default=None)
    bench.add_argument("--batch-size", type=int, default=None)
    bench.add_argument("--learning-rate", type=float, default=None)
    bench.add_argument("--save-steps", type=int, default=None, help="checkpoint every N steps inside a unit")
    bench.add_argument("--mixed-precision", choices=("no", "bf16", "fp16"), default=None)
    bench.add_argument("--eval-batch-size", type=int, default=64)
    bench.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True,
                       help="the method's recipe augmentation on the training images (default on)")

    for name, help_text, default_split in (("evaluate", "accuracy, base/novel/HM and part metrics", "base_test"),
                                            ("explain", "PNG figures and an HTML page", "base_test")):  # fmt: skip
        command = commands.add_parser(name, help=help_text)
        command.add_argument("--adapter", required=True, help="a saved adapter folder (e.g. runs/ivpt/adapter)")
        command.add_argument("--model", default=None, help="base model (default: the adapter's base_model_name_or_path)")
        _data_options(command, default_split)
        command.add_argument("--batch-size", type=int, default=64)
        if name == "evaluate":
            command.add_argument("--novel-split", default=None, help="also evaluate on this split's (novel) classes; HM")
            command.add_argument("--base-to-novel", action="store_true",
                                 help="evaluate on the base and the novel half of --split's classes; HM")
            command.add_argument("--parts", action="store_true", help="part consistency, stability and alignment "
                                 "(needs keypoints and keypoints_visible columns, and part_masks for alignment: "
                                 "ConceptWorld, or CUB with --dataset cub:FOLDER, scored on box crops)")  # fmt: skip
            command.add_argument("--output", default=None, help="also write the metrics to this JSON file")
        else:
            command.add_argument("--num-images", type=int, default=6,
                                 help="images to explain, sampled across the classes by --seed")
            command.add_argument("--misclassified", action="store_true",
                                 help="explain only images the model gets wrong")  # fmt: skip
            command.add_argument("--output-dir", default="explanations")
            command.add_argument("--title", default=None)
    return parser


def _apply_config_file(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse ``argv``; values from ``--config FILE`` become defaults that command-line flags override."""
    args = parser.parse_args(argv)
    if getattr(args, "config", None):
        import yaml

        subparser = _subparser(parser, args.command)
        try:
            values = yaml.safe_load(Path(args.config).read_text())
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
            subparser.error(f"--config {args.config}: cannot be read as YAML/JSON: {str(error).splitlines()[0]}")
        if not isinstance(values, dict):
            subparser.error(f"--config {args.config}: expected a mapping of option names to values")
        values = {str(key).replace("-", "_"): value for key, value in values.items()}
        method_settings = values.pop("method_settings", values.pop("method_config", None))
        if method_settings is not None and not isinstance(method_settings, dict):
            subparser.error(f"--config {args.config}: method_settings must be a mapping of field names to values")
        known = set(vars(args)) - {"command", "config", "debug"}
        unknown = sorted(set(values) - known)
        if unknown:
            subparser.error(f"--config {args.config}: unknown options {unknown}")
        subparser.set_defaults(**values)
        args = parser.parse_args(argv)
        args.method_settings = method_settings
    return args


def _subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    return parser._subparsers._group_actions[0].choices[command]


# Numeric options: (integer, minimum, minimum excluded, maximum); None values mean "the default / the recipe's".
NUMBER_OPTIONS = {
    "max_steps": (True, 1, False, None), "epochs": (False, 0, True, None), "batch_size": (True, 1, False, None),
    "gradient_accumulation_steps": (True, 1, False, None), "learning_rate": (False, 0, True, None),
    "warmup_epochs": (False, 0, False, None), "max_grad_norm": (False, 0, True, None),
    "num_workers": (True, 0, False, None), "save_steps": (True, 0, False, None),
    "save_total_limit": (True, 1, False, None), "logging_steps": (True, 1, False, None),
    "shots": (True, 1, False, None), "image_size": (True, 1, False, None), "seed": (True, 0, False, 2**32 - 1),
    "num_images": (True, 1, False, None), "steps": (True, 1, False, None),
}  # fmt: skip


def validate_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Every option's value (from the command line or --config) checked before any work; a bad one ends with
    ``COMMAND: error: argument --flag: ...`` and exit status 2."""
    from .validation import check_number

    subparser = _subparser(parser, args.command)
    for action in subparser._actions:
        if not action.option_strings or action.dest not in vars(args):
            continue
        flag, value = max(action.option_strings, key=len), getattr(args, action.dest)
        try:
            if action.choices is not None and value is not None and value not in action.choices:
                raise ValueError(f"expected one of {list(action.choices)}, got {value!r}")
            if action.dest in NUMBER_OPTIONS and value is not None:
                integer, minimum, exclusive, maximum = NUMBER_OPTIONS[action.dest]
                check_number("value", value, integer=integer, minimum=minimum, exclusive_minimum=exclusive, maximum=maximum)
            if action.dest in ("output_dir", "dataset", "split", "model", "adapter") and value is not None:
                if not isinstance(value, str) or not value.strip():
                    raise ValueError(f"expected a non-empty name, got {value!r}")
        except (TypeError, ValueError) as error:
            subparser.error(f"argument {flag}: {str(error).removeprefix('value ')}")
    if getattr(args, "class_names", None) is not None:
        from .validation import check_class_names

        try:
            check_class_names(args.class_names, "--class-names")
        except ValueError as error:
            subparser.error(f"argument {error}")


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if isinstance(error, (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, PermissionError)) \
        else f"{type(error).__name__}: {text}"  # fmt: skip


def _interrupted_message(args) -> str:
    if args.command != "train":
        return f"peft-interp {args.command}: interrupted"
    from .training.checkpoint import resume_hint

    checkpoint = resume_hint(Path(args.output_dir))
    if checkpoint is None:
        return (f"peft-interp train: interrupted before the first checkpoint in {args.output_dir}: nothing to resume "
                "(--save-steps N saves every N steps)")  # fmt: skip
    return (f"peft-interp train: interrupted; resume from {checkpoint} by running the same command with --resume "
            f"(or --resume {checkpoint})")  # fmt: skip


def _default_model(method) -> str:
    """The shipped backbone of ``method``'s family (an unknown ``method`` is refused right after, by validate_args)."""
    spec = registered_methods().get(method) if isinstance(method, str) else None
    return spec.default_backbone if spec is not None else "conceptworld-clip"


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = _apply_config_file(parser, sys.argv[1:] if argv is None else argv)
    args.debug = getattr(args, "debug", False)
    if args.command == "train":
        if args.method is None:
            _subparser(parser, "train").error("--method is required (on the command line or in --config)")
        args.model = args.model or _default_model(args.method)
        args.output_dir = args.output_dir or f"runs/{args.method}"
        args.method_settings = getattr(args, "method_settings", None)
    validate_args(parser, args)
    start = time.perf_counter()
    command = {"train": train_command, "evaluate": evaluate_command, "explain": explain_command, "demo": demo_command,
               "benchmark": benchmark_command}
    try:
        command[args.command](args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(_interrupted_message(args), file=sys.stderr)
        raise SystemExit(130) from None
    except Exception as error:  # one clear line; the traceback with --debug
        if args.debug:
            raise
        print(f"peft-interp {args.command}: error: {_one_line(error)} (--debug shows the traceback)", file=sys.stderr)
        raise SystemExit(1) from None
    if args.command == "demo":
        print(f"demo took {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
