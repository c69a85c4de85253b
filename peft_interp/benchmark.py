"""``peft-interp benchmark``: a method over a suite of datasets with the papers' protocols, in one command.

Protocols (seeds 1-3 by default; every number is the mean +- std over seeds):

* ``base_to_novel`` (CoCoOp, and the CLIP prompt papers after it): train on 16 shots of the base classes (the first
  ``ceil(n / 2)`` label ids), test on the base and the novel classes of the test split, each its own n-way
  problem; the table gives base / novel / HM per dataset and their average (HM of the averages, as CoCoOp).
* ``few_shot`` (CoOp): train on K in {1, 2, 4, 8, 16} shots of every class, test accuracy per dataset and K.
* ``cross_dataset`` (CoCoOp): train on 16 shots of ImageNet's 1,000 classes, then score the learnt prompt on every
  other dataset's classes (``set_class_names``, no retraining); ``domain_generalization``: the same to
  ImageNet-V2 / -Sketch / -A / -R.
* ``parts`` (IVPT): train a visual method on the training split, test accuracy on the whole test images and part
  consistency / stability (EvalProtoPNet) on their bounding-box crops (CUB; ConceptWorld gives its own frame and
  concept alignment as well).

Method ``zero_shot`` is CLIP with each dataset's hand-written template (:mod:`peft_interp.datasets.templates`),
which the CLIP methods also receive as their ``template`` (zero-shot view, DualViewMI's hand-crafted view).

Work is split into units, one per (dataset, seed) (and shots for ``few_shot``); each finished unit writes
``results/<protocol>/<dataset>/<unit>.json`` atomically and is skipped when the command runs again, and a unit's
training resumes from its newest checkpoint (``--save-steps``), so an interrupted sweep continues where it stopped.
The table (``table.md``, ``table.json``) is rebuilt from all finished units after every unit.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .pipeline import image_transform, load_backbone, method_config
from .registry import method_spec, registered_methods

PROTOCOLS = ("base_to_novel", "few_shot", "cross_dataset", "domain_generalization", "parts")
FEW_SHOTS = (1, 2, 4, 8, 16)
FRACTIONS: tuple[str, ...] = ()  # metrics in [0, 1] to show in %: none, the evaluation runner gives percentages


def suites() -> dict[str, tuple[str, ...]]:
    from .datasets import COOP_DATASETS, IMAGENET_SHIFTS

    return {"coop11": COOP_DATASETS, "imagenet_shifts": IMAGENET_SHIFTS,
            "cross_dataset_targets": COOP_DATASETS[1:]}  # fmt: skip


@dataclass
class BenchmarkConfig:
    """What ``peft-interp benchmark`` runs (one field per command-line option).

    Args:
        method: a method of ``peft-interp train`` or ``zero_shot``.
        protocol: one of :data:`PROTOCOLS`.
        datasets: dataset names (:data:`peft_interp.datasets.BENCHMARK_DATASETS`), suite names (``coop11``,
            ``imagenet_shifts``) or ``conceptworld``; for cross-dataset protocols these are the targets.
        data_root: the folder holding every dataset under its documented folder name (CoOp's ``$DATA``).
        model: backbone (shipped name, folder or Hub id); default the shipped ConceptWorld backbone of the method.
        seeds, shots: seeds and training images per class (``few_shot``: every K in ``shots``).
        source: the training dataset of ``cross_dataset`` / ``domain_generalization``.
        max_test_per_class: evaluate on at most this many test images per class (quick runs); None: all.
        training: TrainingArguments overrides (max_steps, epochs, batch_size, learning_rate, save_steps, ...).
        method_settings: fields of the method's config.
        augment: the method's recipe augmentation on the training images.
    """

    method: str
    protocol: str
    datasets: list[str]
    output_dir: str
    data_root: str | None = None
    model: str | None = None
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    shots: list[int] | None = None
    source: str = "imagenet"
    image_size: int | None = None
    max_test_per_class: int | None = None
    training: dict = field(default_factory=dict)
    method_settings: dict = field(default_factory=dict)
    augment: bool = True
    batch_size_eval: int = 64

    def __post_init__(self) -> None:
        methods = list(registered_methods())
        if self.method not in (*methods, "zero_shot"):
            raise ValueError(f"method {self.method!r} is not one of {[*methods, 'zero_shot']}")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol {self.protocol!r} is not one of {list(PROTOCOLS)}")
        visual = is_visual(self.method)
        if self.protocol in ("base_to_novel", "cross_dataset", "domain_generalization") and visual:
            raise ValueError(f"protocol {self.protocol} transfers a prompt to new class names: it needs a CLIP "
                             f"method ({['zero_shot', *registered_methods('clip')]}), got {self.method}")  # fmt: skip
        if self.protocol == "parts" and not visual:
            raise ValueError(f"protocol parts scores prototype maps: it needs {list(registered_methods('vision'))}, "
                             f"got {self.method}")  # fmt: skip
        self.datasets = expand_datasets(self.datasets)
        self.shots = list(self.shots or (FEW_SHOTS if self.protocol == "few_shot" else (16,)))
        if self.protocol != "few_shot" and len(self.shots) != 1:
            raise ValueError(f"--shots takes one value for protocol {self.protocol}, got {self.shots}")
        if self.method == "zero_shot":
            self.seeds = self.seeds[:1]  # nothing is drawn: one evaluation
        self.model = self.model or method_spec("coop" if self.method == "zero_shot" else self.method).default_backbone
        needs_root = [name for name in self.all_datasets() if name != "conceptworld"]
        if needs_root and self.data_root is None:
            raise ValueError(f"datasets {needs_root} are read from disk: give --data-root (the folder holding them)")

    def all_datasets(self) -> list[str]:
        cross = self.protocol in ("cross_dataset", "domain_generalization")
        return [self.source, *self.datasets] if cross else list(self.datasets)


def is_visual(method: str) -> bool:
    """Whether ``method`` (a registered method or ``zero_shot``) prompts a vision transformer with its own head."""
    return method != "zero_shot" and method_spec(method).family == "vision"


def expand_datasets(names: list[str]) -> list[str]:
    from .datasets import BENCHMARK_DATASETS

    expanded = []
    for name in names:
        members = suites().get(name, (name,))
        for member in members:
            if member != "conceptworld" and member not in BENCHMARK_DATASETS:
                raise ValueError(f"unknown dataset {member!r}; known: conceptworld, {sorted(BENCHMARK_DATASETS)}, "
                                 f"suites {sorted(suites())}")  # fmt: skip
            if member not in expanded:
                expanded.append(member)
    return expanded


# ------------------------------------------------------------------------------------------------------- data
class DataSource:
    """The splits of one dataset the protocols use: ``train(classes, shots, seed)`` and ``test(classes)``, with
    ``classes`` "all", "base" or "novel" (relabelled from 0). ConceptWorld's "all" is its 50 base classes; its
    novel classes are its own split."""

    def __init__(self, name: str, data_root: str | None, image_size: int, max_test_per_class: int | None = None):
        self.name, self.data_root, self.image_size, self.max_test_per_class = name, data_root, image_size, max_test_per_class

    @property
    def title(self) -> str:
        from .datasets import BENCHMARK_DATASETS

        return "ConceptWorld" if self.name == "conceptworld" else BENCHMARK_DATASETS[self.name].title

    @property
    def template(self) -> str:
        from .datasets import dataset_template

        return dataset_template(self.name)

    def _load(self, split: str):
        from .datasets import dataset_folder, load_benchmark_dataset

        return load_benchmark_dataset(self.name, dataset_folder(self.name, self.data_root), split)

    def _classes(self, dataset, classes: str):
        from .training.data import base_novel_classes, select_classes

        if classes == "all":
            return dataset
        ids = base_novel_classes(dataset.features["label"].num_classes)[0 if classes == "base" else 1]
        return select_classes(dataset, ids)

    def train(self, classes: str, shots: int, seed: int):
        from .training.data import few_shot

        if self.name == "conceptworld":
            from .data import load_conceptworld

            split = "novel_train" if classes == "novel" else "base_train"
            return load_conceptworld(split, shots=shots, seed=seed, image_size=self.image_size)
        return few_shot(self._classes(self._load("train"), classes), shots, seed)

    def test(self, classes: str = "all"):
        from .training.data import few_shot

        if self.name == "conceptworld":
            from .data import load_conceptworld

            split = "novel_test" if classes == "novel" else "base_test"
            return load_conceptworld(split, shots=self.max_test_per_class, image_size=self.image_size)
        dataset = self._classes(self._load("test"), classes)
        if self.max_test_per_class:
            dataset = few_shot(dataset, self.max_test_per_class, seed=0)
        return dataset


def class_names(dataset) -> list[str]:
    return list(dataset.features["label"].names)


# ----------------------------------------------------------------------------------------------------- models
def load_backbone_and_transform(config: BenchmarkConfig):
    """A fresh backbone and its evaluation transform (``config.image_size`` or the model's own)."""
    backbone = load_backbone(config.model)
    return backbone, image_transform(backbone, config.image_size)


def build_model(config: BenchmarkConfig, backbone, transform, names: list[str], template: str, seed: int):
    """The method's ``PeftModel`` on ``backbone`` for ``names``."""
    import torch
    from peft import get_peft_model

    settings = dict(config.method_settings)
    method = "coop" if config.method == "zero_shot" else config.method
    if is_visual(method):
        settings.setdefault("image_size", transform.image_size)
    else:
        settings.setdefault("template", template)
    torch.manual_seed(seed)
    return get_peft_model(backbone, method_config(method, names, settings))


def train_model(config: BenchmarkConfig, backbone, transform, train_set, template: str, seed: int, run_dir: Path):
    """The method trained on ``train_set`` (resuming from ``run_dir``'s newest checkpoint); zero-shot: untrained."""
    from .training import ImageCollator, InterpTrainer, TrainingArguments
    from .training.augment import recipe_train_transform

    model = build_model(config, backbone, transform, class_names(train_set), template, seed)
    if config.method == "zero_shot":
        return model
    train_transform = transform
    if config.augment:
        train_transform = recipe_train_transform(config.method, transform.image_size, transform.mean, transform.std)
    training = {"report_to": None, **config.training}
    recipe_batch = model.base_model.training_recipe().batch_size
    if "batch_size" not in config.training and len(train_set) < recipe_batch:
        training["batch_size"] = len(train_set)  # e.g. 1 shot x 10 classes < 32: one batch of all (as Dassl does)
    args = TrainingArguments(output_dir=str(run_dir), seed=seed, resume_from_checkpoint=True, **training)
    rows = train_set.select_columns(["image", "label"])
    InterpTrainer(model, args, rows, ImageCollator(train_transform), progress=False).train()
    return model


def _evaluating(config: BenchmarkConfig, model):
    """Zero-shot CLIP is the tuner with its adapter disabled (hand-written template)."""
    import contextlib

    return model.disable_adapter() if config.method == "zero_shot" else contextlib.nullcontext()


def set_classes(model, names: list[str], template: str) -> None:
    """Point a CLIP prompt model at another dataset's classes and hand-written template (no retraining)."""
    tuner = model.base_model
    tuner.set_class_names(names)
    tuner.peft_config[tuner.active_adapters[0]].template = template


# ------------------------------------------------------------------------------------------------------ units
def unit_path(output_dir: Path, protocol: str, dataset: str, seed: int, shots: int | None = None) -> Path:
    name = f"seed{seed}" if shots is None else f"{shots}shot-seed{seed}"
    return Path(output_dir) / "results" / protocol / dataset / f"{name}.json"


def write_json(path: Path, value) -> None:
    """Write ``value`` to ``path`` atomically (a kill leaves the old file or none, never half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".tmp-{path.name}")
    staging.write_text(json.dumps(value, indent=2))
    os.replace(staging, path)


def run_unit(config: BenchmarkConfig, dataset: str, seed: int, shots: int) -> dict:
    """Train and evaluate one (dataset, seed[, shots]) unit of ``base_to_novel``, ``few_shot`` or ``parts``."""
    from .training.data import ImageCollator
    from .evaluation.runner import (
        evaluate_accuracy,
        evaluate_base_to_novel,
        evaluate_parts,
    )

    output = Path(config.output_dir)
    run_dir = output / "runs" / config.protocol / dataset / (f"{shots}shot-seed{seed}")
    backbone, transform = load_backbone_and_transform(config)
    source = DataSource(dataset, config.data_root, transform.image_size, config.max_test_per_class)
    if config.protocol == "base_to_novel":
        train_set = source.train("base", shots, seed)
        model = train_model(config, backbone, transform, train_set, source.template, seed, run_dir)
        base, novel = source.test("base"), source.test("novel")
        with _evaluating(config, model):
            return evaluate_base_to_novel(model, base, novel, class_names(novel), ImageCollator(transform),
                                          config.batch_size_eval)  # fmt: skip
    model = train_model(config, backbone, transform, source.train("all", shots, seed), source.template, seed, run_dir)
    test = source.test("all")
    if config.protocol == "few_shot":
        with _evaluating(config, model):
            return evaluate_accuracy(model, test, ImageCollator(transform), config.batch_size_eval)
    # parts: accuracy on whole images; part metrics in the box-crop frame (CUB) or the image frame (ConceptWorld)
    results = evaluate_accuracy(model, test, ImageCollator(transform), config.batch_size_eval)
    if dataset == "cub":
        from .datasets import BOX_COLUMN, cub_part_protocol

        parts = evaluate_parts(model, cub_part_protocol(test, transform.image_size),
                               ImageCollator(transform, box_column=BOX_COLUMN), config.batch_size_eval)  # fmt: skip
    else:
        from .data import PART_NAMES

        parts = evaluate_parts(model, test, ImageCollator(transform), config.batch_size_eval, part_names=list(PART_NAMES))
    results.update({key: parts[key] for key in ("consistency", "stability", "alignment") if key in parts})
    return results


def run_transfer(config: BenchmarkConfig, seed: int) -> None:
    """``cross_dataset`` / ``domain_generalization`` for one seed: train on the source once, then score every target
    whose unit is not finished (the source's own test set included)."""
    from .training.data import ImageCollator
    from .evaluation.runner import evaluate_accuracy

    output, shots = Path(config.output_dir), config.shots[0]
    targets = [config.source, *[name for name in config.datasets if name != config.source]]
    missing = [name for name in targets if not unit_path(output, config.protocol, name, seed).exists()]
    if not missing:
        return
    run_dir = output / "runs" / config.protocol / config.source / f"{shots}shot-seed{seed}"
    backbone, transform = load_backbone_and_transform(config)
    source = DataSource(config.source, config.data_root, transform.image_size, config.max_test_per_class)
    model = train_model(config, backbone, transform, source.train("all", shots, seed), source.template, seed, run_dir)
    for name in missing:
        target = DataSource(name, config.data_root, transform.image_size, config.max_test_per_class)
        test = target.test("all")
        set_classes(model, class_names(test), target.template)
        with _evaluating(config, model):
            result = evaluate_accuracy(model, test, ImageCollator(transform), config.batch_size_eval)
        write_json(unit_path(output, config.protocol, name, seed), {**result, "trained_on": config.source})
        print(f"[benchmark] {config.protocol} {config.source} -> {name} seed {seed}: {format_metrics(result)}")


def run_benchmark(config: BenchmarkConfig) -> dict:
    """Run every unfinished unit, then write ``table.md`` and ``table.json``; returns the table's JSON."""
    output = Path(config.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    write_json(output / "benchmark_config.json", asdict(config))
    if config.protocol in ("cross_dataset", "domain_generalization"):
        for seed in config.seeds:
            run_transfer(config, seed)
            write_tables(config)
        return write_tables(config)
    for dataset in config.datasets:
        for shots in config.shots:
            for seed in config.seeds:
                path = unit_path(output, config.protocol, dataset, seed, shots if config.protocol == "few_shot" else None)
                if path.exists():
                    print(f"[benchmark] {path.relative_to(output)} is done; skipped")
                    continue
                result = run_unit(config, dataset, seed, shots)
                write_json(path, {**result, "shots": shots})
                print(f"[benchmark] {config.protocol} {dataset} {shots}-shot seed {seed}: {format_metrics(result)}")
                write_tables(config)
    return write_tables(config)


# ----------------------------------------------------------------------------------------------------- tables
def format_metrics(result: dict) -> str:
    return ", ".join(f"{key} {as_percent(key, value):.1f}" for key, value in result.items()
                     if isinstance(value, (int, float)) and key != "shots")  # fmt: skip


def as_percent(key: str, value: float) -> float:
    return 100.0 * value if key in FRACTIONS else value


def mean_std(values: list[float]) -> dict:
    """Mean and (population, as CoOp's result parser) standard deviation over seeds."""
    array = np.asarray(values, dtype=np.float64)
    return {"mean": float(array.mean()), "std": float(array.std()), "n": len(values)}


def harmonic_mean(base: float, novel: float) -> float:
    return 2 * base * novel / (base + novel) if base + novel else 0.0


def load_units(config: BenchmarkConfig) -> dict:
    """``{dataset: {unit name: metrics}}`` of every finished unit of this protocol and seed list."""
    found = {}
    for dataset in config.all_datasets():
        for seed in config.seeds:
            for shots in config.shots if config.protocol == "few_shot" else [None]:
                path = unit_path(config.output_dir, config.protocol, dataset, seed, shots)
                if path.exists():
                    found.setdefault(dataset, {})[path.stem] = json.loads(path.read_text())
    return found


def summarise(config: BenchmarkConfig) -> dict:
    """Per dataset (and K), each metric's mean +- std over the finished seeds, in %; plus the average row."""
    units = load_units(config)
    rows = {}
    for dataset, results in units.items():
        groups = {}
        for name, metrics in results.items():
            key = name.split("-seed")[0] if config.protocol == "few_shot" else "all"
            for metric, value in metrics.items():
                if isinstance(value, (int, float)) and metric != "shots":
                    groups.setdefault(key, {}).setdefault(metric, []).append(as_percent(metric, value))
        rows[dataset] = {key: {metric: mean_std(values) for metric, values in metrics.items()}
                         for key, metrics in groups.items()}  # fmt: skip
        if config.protocol == "base_to_novel" and "all" in rows[dataset]:
            cells = rows[dataset]["all"]  # HM of the mean base and novel accuracies (CoCoOp's table)
            cells["hm"] = {"mean": harmonic_mean(cells["base"]["mean"], cells["novel"]["mean"]), "std": None,
                           "n": cells["base"]["n"]}  # fmt: skip
    return rows


def average_row(config: BenchmarkConfig, rows: dict) -> dict:
    """Mean over the datasets (targets only for transfer protocols) of each metric's mean."""
    datasets = [d for d in rows if not (config.protocol in ("cross_dataset", "domain_generalization") and d == config.source)]
    columns = {}
    for dataset in datasets:
        for key, metrics in rows[dataset].items():
            for metric, cell in metrics.items():
                columns.setdefault(key, {}).setdefault(metric, []).append(cell["mean"])
    average = {key: {metric: float(np.mean(values)) for metric, values in metrics.items()}
               for key, metrics in columns.items()}  # fmt: skip
    if config.protocol == "base_to_novel" and "all" in average:
        average["all"]["hm"] = harmonic_mean(average["all"]["base"], average["all"]["novel"])
    return average


def escape_markdown(text: str) -> str:
    return "".join(f"\\{c}" if c in "\\|*_`[]<>#" else c for c in str(text))


def cell(value: dict | None) -> str:
    if value is None:
        return "—"
    if value.get("std") is None or value["n"] < 2:
        return f"{value['mean']:.1f}"
    return f"{value['mean']:.1f} ± {value['std']:.1f}"


def markdown_table(config: BenchmarkConfig, rows: dict, average: dict) -> str:
    titles = {name: DataSource(name, None, 0).title for name in rows}
    method = "zero-shot CLIP" if config.method == "zero_shot" else config.method
    shots = f"K = {config.shots}" if config.protocol == "few_shot" else f"{config.shots[0]} shots"
    caption = (f"**{escape_markdown(method)}**, protocol `{config.protocol}`, seeds {config.seeds}, {shots}; "
               "accuracy in %, mean ± std over seeds")  # fmt: skip
    lines = [caption, ""]
    if config.protocol == "few_shot":
        header = ["dataset", *[f"{k}-shot" for k in config.shots]]
        body = [[titles[d], *[cell(rows[d].get(str(k) + "shot", {}).get("accuracy")) for k in config.shots]] for d in rows]
        body.append(["**average**", *[f"{average.get(str(k) + 'shot', {}).get('accuracy', float('nan')):.1f}"
                                       for k in config.shots]])  # fmt: skip
    elif config.protocol in ("cross_dataset", "domain_generalization"):
        targets = [d for d in rows if d != config.source]
        header = [f"source: {titles.get(config.source, config.source)}", *[titles[d] for d in targets], "average"]
        source_cell = cell(rows.get(config.source, {}).get("all", {}).get("accuracy"))
        mean_targets = average.get("all", {}).get("accuracy")
        body = [[source_cell, *[cell(rows[d]["all"]["accuracy"]) for d in targets],
                 "—" if mean_targets is None else f"{mean_targets:.1f}"]]  # fmt: skip
    else:
        metrics = {"base_to_novel": ["base", "novel", "hm"], "parts": ["accuracy", "consistency", "stability",
                   "alignment"]}[config.protocol]  # fmt: skip
        present = [m for m in metrics if any(m in rows[d].get("all", {}) for d in rows)]
        header = ["dataset", *[{"hm": "HM"}.get(m, m) for m in present]]
        body = [[titles[d], *[cell(rows[d]["all"].get(m)) for m in present]] for d in rows]
        if len(rows) > 1 or config.protocol == "base_to_novel":
            body.append(["**average**", *[f"{average.get('all', {}).get(m, float('nan')):.1f}" for m in present]])
    lines.append("| " + " | ".join(escape_markdown(h) for h in header) + " |")
    lines.append("|" + " --- |" * len(header))
    for row in body:
        lines.append("| " + " | ".join(row if row[0].startswith("**") else [escape_markdown(row[0]), *row[1:]]) + " |")
    return "\n".join(lines) + "\n"


def write_tables(config: BenchmarkConfig) -> dict:
    """``table.md`` and ``table.json`` in the output folder, from every finished unit."""
    rows = summarise(config)
    average = average_row(config, rows)
    table = {"method": config.method, "protocol": config.protocol, "seeds": config.seeds, "shots": config.shots,
             "model": config.model, "datasets": rows, "average": average,
             "units": load_units(config)}  # fmt: skip
    output = Path(config.output_dir)
    write_json(output / "table.json", table)
    (output / "table.md").write_text(markdown_table(config, rows, average))
    return table


__all__ = ["PROTOCOLS", "BenchmarkConfig", "DataSource", "run_benchmark", "summarise", "write_tables"]
