"""A battery of bad inputs and faults: each must be stopped by our own check, with an exception of the expected type
(or the command line's exit status) whose message names the offending field, flag or file.

The cases are tables (``CASES_*``) of ``(callable, expected exception type, regex the message must match)``; the
callables get a :class:`Context` of shared, module-scoped inputs (tiny models, a saved adapter, a trained run with
checkpoints, an image folder) and copy whatever they damage. After the tables, one test per failure class of
issue 15 ("fail loudly, lose nothing") shows the behaviour that used to go wrong.
"""

from __future__ import annotations

import errno
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, Features, Value
from datasets import Image as ImageFeature
from peft import PeftModel, get_peft_model
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import Dinov2Model

from peft_interp import CoOpConfig, DualViewMIConfig, IVPTConfig, VPTDeepConfig
from peft_interp.cli import main
from peft_interp.training import InterpTrainer, TrainingArguments
from peft_interp.training.data import Columns, dataset_class_names, load_image_dataset, validate_image_dataset

from .tiny_models import IMAGE_SIZE, make_backbone, make_clip

WEIGHTS = "adapter_model.safetensors"


# ------------------------------------------------------------------------------------------------ shared inputs
def rows(count: int = 8, num_classes: int = 2):
    generator = torch.Generator().manual_seed(1)
    return [{"pixel_values": torch.randn(3, IMAGE_SIZE, IMAGE_SIZE, generator=generator),
             "labels": torch.tensor(i % num_classes)} for i in range(count)]  # fmt: skip


def stack(batch):
    return {key: torch.stack([row[key] for row in batch]) for key in batch[0]}


def vpt(num_classes: int = 2, **config):
    return get_peft_model(make_backbone("dinov2"), VPTDeepConfig(num_classes=num_classes, num_prompt_tokens=2, **config))


def trainer(output_dir, model=None, **overrides) -> InterpTrainer:
    args = TrainingArguments(str(output_dir), **{"max_steps": 6, "batch_size": 2, "save_steps": 2, "logging_steps": 4,
                                                 "save_total_limit": None, "report_to": None, **overrides})  # fmt: skip
    return InterpTrainer(model or vpt(), args, rows(), stack, progress=False)


def write_images(root: Path, classes=("cat", "dog", "fox"), per_class: int = 2) -> Path:
    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


class Context:
    def __init__(self, root: Path) -> None:
        self.root, self._count = root, 0
        make_backbone("dinov2").save_pretrained(root / "model")  # a base model folder (safetensors)
        base = Dinov2Model.from_pretrained(root / "model")
        self.adapter = root / "vpt"  # 2 classes, base_model_name_or_path = the folder above
        get_peft_model(base, VPTDeepConfig(num_classes=2, num_prompt_tokens=2)).save_pretrained(self.adapter)
        self.ivpt = root / "ivpt"
        get_peft_model(make_backbone("dinov2"), IVPTConfig(num_classes=2)).save_pretrained(self.ivpt)
        self.images = write_images(root / "images")  # 3 classes
        self.run = root / "run"  # a finished 6-step run with checkpoints 2, 4, 6
        trainer(self.run).train()

    def fresh(self, name: str = "case") -> Path:
        self._count += 1
        return self.root / f"{name}-{self._count}"

    def copy(self, source: Path) -> Path:
        target = self.fresh(source.name)
        shutil.copytree(source, target)
        return target


@pytest.fixture(scope="module")
def ctx(tmp_path_factory) -> Context:
    return Context(tmp_path_factory.mktemp("bad-inputs"))


def check_raises(call, error_type, pattern):
    with pytest.raises(error_type) as info:
        call()
    assert re.search(pattern, str(info.value)), f"message does not name it ({pattern!r}): {info.value}"


# --------------------------------------------------------------------------------------- config: TrainingArguments
def targs(**values):
    return lambda ctx: TrainingArguments("out", **values)


CASES_TRAINING_ARGUMENTS = [
    pytest.param(targs(learning_rate=float("nan")), ValueError, r"learning_rate must be a finite", id="lr-nan"),
    pytest.param(targs(learning_rate=float("inf")), ValueError, r"learning_rate must be a finite", id="lr-inf"),
    pytest.param(targs(learning_rate=0.0), ValueError, r"learning_rate must be > 0", id="lr-zero"),
    pytest.param(targs(learning_rate="fast"), TypeError, r"learning_rate must be a number", id="lr-string"),
    pytest.param(targs(max_grad_norm=-1.0), ValueError, r"max_grad_norm must be > 0, got -1", id="grad-norm-negative"),
    pytest.param(targs(warmup_epochs=-5.0), ValueError, r"warmup_epochs must be >= 0, got -5", id="warmup-negative"),
    pytest.param(targs(epochs=0.0), ValueError, r"epochs must be > 0", id="epochs-zero"),
    pytest.param(targs(logging_steps=0), ValueError, r"logging_steps must be >= 1", id="logging-steps-zero"),
    pytest.param(targs(save_total_limit=-2), ValueError, r"save_total_limit must be >= 1, got -2", id="limit-negative"),
    pytest.param(targs(save_total_limit=0), ValueError, r"save_total_limit must be >= 1", id="limit-zero"),
    pytest.param(targs(num_workers=-1), ValueError, r"num_workers must be >= 0", id="workers-negative"),
    pytest.param(targs(seed=-1), ValueError, r"seed must be >= 0", id="seed-negative"),
    pytest.param(targs(batch_size=0), ValueError, r"batch_size must be >= 1", id="batch-zero"),
    pytest.param(targs(max_steps=2.5), TypeError, r"max_steps must be an integer", id="max-steps-float"),
    pytest.param(targs(gradient_accumulation_steps=0), ValueError, r"gradient_accumulation_steps must be >= 1",
                 id="accumulation-zero"),
    pytest.param(lambda ctx: TrainingArguments(""), ValueError, r"output_dir must name a folder", id="output-dir-empty"),
]


# ----------------------------------------------------------------------------------------- config: method fields
CASES_METHOD_CONFIG = [
    pytest.param(lambda ctx: IVPTConfig(num_classes=2, gumbel_tau=0.0), ValueError, r"`gumbel_tau` must be > 0",
                 id="gumbel-tau-zero"),
    pytest.param(lambda ctx: IVPTConfig(num_classes=2, gumbel_tau=-1.0), ValueError, r"`gumbel_tau` must be > 0",
                 id="gumbel-tau-negative"),
    pytest.param(lambda ctx: IVPTConfig(num_classes=2, consistency_weight=float("nan")), ValueError,
                 r"`consistency_weight` must be a finite", id="loss-weight-nan"),
    pytest.param(lambda ctx: IVPTConfig(num_classes=2, gumbel_at_inference="yes"), TypeError,
                 r"`gumbel_at_inference` must be true or false", id="bool-field-string"),
    pytest.param(lambda ctx: VPTDeepConfig(num_classes=2, num_prompt_tokens=2.5), TypeError,
                 r"`num_prompt_tokens` must be an integer", id="int-field-float"),
    pytest.param(lambda ctx: DualViewMIConfig(class_names=["a", "b"], mi_temperature=0.0), ValueError,
                 r"`mi_temperature` must be > 0", id="temperature-zero"),
    pytest.param(lambda ctx: CoOpConfig(class_names=["cat", "dog", "cat"]), ValueError,
                 r"`class_names`: class name 'cat' is duplicated", id="clip-class-duplicate"),
    pytest.param(lambda ctx: CoOpConfig(class_names=["Cat", "cat "]), ValueError,
                 r"`class_names`: class name 'cat ' is the same as 'Cat' up to case", id="clip-class-case-duplicate"),
    pytest.param(lambda ctx: VPTDeepConfig(num_classes=2, class_names=["Dog", "dog"]), ValueError,
                 r"`class_names`: class name 'dog'", id="visual-class-case-duplicate"),
    pytest.param(lambda ctx: VPTDeepConfig(num_classes=2, image_size=0), ValueError, r"`image_size` must be",
                 id="image-size-zero"),
    pytest.param(lambda ctx: get_peft_model(torch.nn.Linear(2, 2), VPTDeepConfig(num_classes=2)), TypeError,
                 r"VPTDeepConfig adapts a Hugging Face vision model .* got a Linear without one",
                 id="module-without-hf-config"),
]


# ----------------------------------------------------------------------------------------------- model inputs
def forward(pixels=None, labels=None, model="vpt"):
    def call(ctx):
        net = vpt(3) if model == "vpt" else get_peft_model(make_clip(), CoOpConfig(class_names=["a", "b", "c"]))
        x = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE) if pixels is None else pixels
        return net(pixel_values=x, labels=labels)

    return call


S = IMAGE_SIZE
CASES_MODEL_INPUTS = [
    pytest.param(forward(torch.randint(0, 255, (2, 3, S, S), dtype=torch.uint8)), TypeError,
                 r"`pixel_values` must be a float tensor.*uint8", id="pixels-uint8"),
    pytest.param(forward(torch.full((2, 3, S, S), float("nan"))), ValueError, r"`pixel_values` holds NaN",
                 id="pixels-nan"),
    pytest.param(forward(torch.randn(2, 3, S, S).index_fill_(0, torch.tensor([1]), float("inf"))), ValueError,
                 r"`pixel_values` holds NaN or infinite values \(images \[1\]", id="pixels-inf"),
    pytest.param(forward(torch.randn(2, 1, S, S)), ValueError, r"`pixel_values` has 1 channels", id="pixels-channels"),
    pytest.param(forward(torch.randn(2, 3, S + 7, S + 7)), ValueError, r"`pixel_values` must have shape \(B, C, 28, 28\) with C=3",
                 id="pixels-size"),
    pytest.param(forward(torch.randn(3, S, S)), ValueError, r"`pixel_values` must have shape", id="pixels-3d"),
    pytest.param(forward(labels=torch.tensor([0, 3])), ValueError, r"`labels` must be class ids in \[0, 2\].*\[3\]",
                 id="labels-out-of-range"),
    pytest.param(forward(labels=torch.tensor([-3, 0])), ValueError, r"`labels` must be class ids.*\[-3\]",
                 id="labels-negative"),
    pytest.param(forward(labels=torch.tensor([-100, -100])), ValueError, r"`labels`: every label .* ignore index",
                 id="labels-all-ignored"),
    pytest.param(forward(labels=torch.tensor([0.0, 1.0])), TypeError, r"`labels` must hold integer", id="labels-float"),
    pytest.param(forward(labels=torch.tensor([0, 1, 2])), ValueError, r"`labels` must have shape \(2,\)",
                 id="labels-length"),
    pytest.param(forward(torch.randint(0, 255, (2, 3, S, S), dtype=torch.uint8), model="clip"), TypeError,
                 r"`pixel_values` must be a float tensor", id="clip-pixels-uint8"),
    pytest.param(forward(torch.full((2, 3, S, S), float("nan")), model="clip"), ValueError,
                 r"`pixel_values` holds NaN", id="clip-pixels-nan"),
    pytest.param(forward(torch.randn(2, 3, 56, 56), model="clip"), ValueError, r"`pixel_values` must have shape",
                 id="clip-pixels-size"),
    pytest.param(forward(labels=torch.tensor([0, 7]), model="clip"), ValueError, r"`labels` must be class ids",
                 id="clip-labels-out-of-range"),
]


# -------------------------------------------------------------------------------------------------------- data
def image_dataset(labels, names=("a", "b", "c")):
    features = Features({"image": ImageFeature(), "label": ClassLabel(names=list(names))})
    images = [Image.new("RGB", (8, 8)) for _ in labels]
    return Dataset.from_dict({"image": images, "label": list(labels)}, features=features)


def folder_with(ctx, extra):
    root = ctx.copy(ctx.images)
    extra(root)
    return lambda: load_image_dataset(str(root), "train")


def empty_class(root):
    (root / "zebra").mkdir()


def case_folders(root):
    shutil.copytree(root / "cat", root / "Cat")


def float_image(root):
    Image.fromarray(np.random.rand(S, S).astype(np.float32), mode="F").save(root / "cat" / "f.tiff")


CASES_DATA = [
    pytest.param(lambda ctx: folder_with(ctx, empty_class)(), ValueError, r"class folder '.*zebra' holds no images",
                 id="empty-class-folder"),
    pytest.param(lambda ctx: dataset_class_names(load_image_dataset(str(folder_with_root(ctx, case_folders)), "train"),
                                                 Columns()),
                 ValueError, r"class name 'cat' is the same as 'Cat'", id="case-duplicate-class-folders"),
    pytest.param(lambda ctx: dataset_class_names(image_dataset([0, 1]), Columns(), ["x", "y", "x"]), ValueError,
                 r"--class-names.*'x' is duplicated", id="duplicate-class-names"),
    pytest.param(lambda ctx: validate_image_dataset(image_dataset([0, 2]).cast_column("label", Value("int64")).map(
                     lambda row: {"label": 5 * row["label"] // 2}), Columns(), ["a", "b", "c"]), ValueError,
                 r"label column 'label' has ids in \[0, 5\]", id="labels-beyond-classes"),
    pytest.param(lambda ctx: validate_image_dataset(image_dataset([0, 1]).rename_column("label", "y"), Columns(),
                                                    ["a", "b", "c"]),  # fmt: skip
                 ValueError, r"label column 'label' not found", id="missing-label-column"),
    pytest.param(lambda ctx: validate_image_dataset(image_dataset([]), Columns(), ["a"]), ValueError,
                 r"the dataset is empty", id="empty-dataset"),
    pytest.param(lambda ctx: load_image_dataset("no-such-dataset-xyz", "train"), ValueError,
                 r"dataset 'no-such-dataset-xyz' \(--dataset\)", id="misspelt-dataset"),
    pytest.param(lambda ctx: load_image_dataset("./no/such/folder", "train"), FileNotFoundError,
                 r"dataset folder './no/such/folder' does not exist", id="missing-dataset-folder"),
    pytest.param(lambda ctx: load_image_dataset(str(ctx.images), "validation"), ValueError,
                 r"has no split 'validation' \(--split\)", id="missing-split"),
    pytest.param(lambda ctx: load_image_dataset("conceptworld", "base_trian"), ValueError,
                 r"unknown split 'base_trian'", id="misspelt-conceptworld-split"),
    pytest.param(lambda ctx: validate_image_dataset(load_image_dataset(str(folder_with_root(ctx, float_image)), "train"),
                                                    Columns(), ["cat", "dog", "fox"]),
                 ValueError, r"image \d+ of column 'image' \(.*f\.tiff\) has mode 'F'", id="float-image-mode"),
]


def folder_with_root(ctx, extra) -> Path:
    root = ctx.copy(ctx.images)
    extra(root)
    return root


# --------------------------------------------------------------------------------------------- files: weights
def damaged_adapter(ctx, damage, source=None) -> Path:
    folder = ctx.copy(source or ctx.adapter)
    damage(folder)
    return folder


def flip_a_byte(folder):
    data = bytearray((folder / WEIGHTS).read_bytes())
    data[-3] ^= 0x10
    (folder / WEIGHTS).write_bytes(bytes(data))


def truncate(folder):
    (folder / WEIGHTS).write_bytes((folder / WEIGHTS).read_bytes()[:-100])


def resave(change):
    def damage(folder):
        tensors = load_file(folder / WEIGHTS)
        change(tensors)
        save_file(tensors, folder / WEIGHTS, metadata={"format": "pt"})

    return damage


def drop_first(tensors):
    tensors.pop(sorted(tensors)[0])


def all_nan(tensors):
    for tensor in tensors.values():
        tensor.fill_(float("nan"))


def add_tensor(tensors):
    tensors["base_model.model.extra.weight"] = torch.zeros(2)


def pickle_only(folder):
    (folder / WEIGHTS).rename(folder / "adapter_model.bin")


def from_pretrained(damage, source=None):
    return lambda ctx: PeftModel.from_pretrained(make_backbone("dinov2"), damaged_adapter(ctx, damage, source))


def load_adapter_route(damage):
    def call(ctx):
        model = PeftModel.from_pretrained(make_backbone("dinov2"), ctx.adapter)
        model.load_adapter(damaged_adapter(ctx, damage), adapter_name="second")

    return call


def sharing_route(damage):
    def call(ctx):
        from peft_interp.sharing import load_adapter

        load_adapter(make_backbone("dinov2"), damaged_adapter(ctx, damage))

    return call


def saved_as_pickle(ctx):
    vpt().save_pretrained(ctx.fresh("pickle"), safe_serialization=False)


CASES_WEIGHTS = [
    pytest.param(from_pretrained(flip_a_byte), ValueError, r"adapter_model\.safetensors: the weights' SHA-256 does not",
                 id="bit-flip-from-pretrained"),
    pytest.param(from_pretrained(truncate), ValueError, r"adapter_model\.safetensors is not a valid safetensors",
                 id="truncated-from-pretrained"),
    pytest.param(from_pretrained(resave(all_nan)), ValueError, r"adapter_model\.safetensors: tensors .* NaN",
                 id="nan-weights"),
    pytest.param(from_pretrained(resave(drop_first)), ValueError, r"adapter_model\.safetensors does not hold .* missing \[",
                 id="missing-tensor"),
    pytest.param(from_pretrained(resave(add_tensor)), ValueError, r"unexpected \['base_model\.model\.extra\.weight'\]",
                 id="extra-tensor"),
    pytest.param(from_pretrained(lambda f: shutil.copy(f.parent / "ivpt" / "adapter_config.json", f)), ValueError,
                 r"adapter_model\.safetensors holds weights of a PEFT_INTERP_VPT_DEEP adapter but .* PEFT_INTERP_IVPT",
                 id="peft-type-mismatch"),
    pytest.param(from_pretrained(pickle_only), ValueError, r"holds only adapter_model\.bin \(pickle\)",
                 id="pickle-weights-refused"),
    pytest.param(load_adapter_route(flip_a_byte), ValueError, r"SHA-256 does not match", id="bit-flip-load-adapter"),
    pytest.param(sharing_route(flip_a_byte), ValueError, r"adapter_model\.safetensors: the weights' SHA-256",
                 id="bit-flip-sharing-load-adapter"),
    pytest.param(saved_as_pickle, ValueError, r"safe_serialization=False", id="save-pickle-refused"),
    pytest.param(sharing_route(lambda f: (f / "adapter_config.json").write_text("{peft_type")), ValueError,
                 r"adapter_config\.json is not valid JSON", id="malformed-config-sharing-load-adapter"),
]


# ---------------------------------------------------------------------------------------- files: checkpoints
def resume_damaged(damage, **overrides):
    def call(ctx):
        run = ctx.copy(ctx.run)
        damage(run)
        trainer(run, resume_from_checkpoint=True, **overrides).train()

    return call


def edit_state(run):
    path = run / "checkpoint-6" / "trainer_state.json"
    state = json.loads(path.read_text())
    state["step"] = 5
    path.write_text(json.dumps(state))


def swap_optimizer(run):
    for suffix in ("json", "safetensors"):
        shutil.copy(run / "checkpoint-2" / f"optimizer.{suffix}", run / "checkpoint-6" / f"optimizer.{suffix}")


def remove_manifest(run):
    (run / "checkpoint-6" / "manifest.json").unlink()
    (run / "checkpoint-4" / "manifest.json").unlink()
    (run / "checkpoint-2" / "manifest.json").unlink()


def add_file(run):
    (run / "checkpoint-6" / "notes.txt").write_text("mine")


def output_is_a_file(ctx):
    path = ctx.fresh("file")
    path.write_text("not a folder")
    trainer(path).train()


def adapter_with_user_files(ctx):
    run = ctx.copy(ctx.run)
    (run / "adapter" / "my_notes.md").write_text("keep me")
    trainer(run, resume_from_checkpoint=True).train()


def reuse_without_flag(ctx):
    trainer(ctx.copy(ctx.run)).train()


def resume_other_run(ctx):
    mine = ctx.copy(ctx.run)
    other = ctx.fresh("other")
    trainer(other, max_steps=2).train()
    trainer(mine, resume_from_checkpoint=str(other / "checkpoint-2")).train()


def extend_a_cosine_run(ctx):
    from peft_interp.tuners.recipe import COOP_RECIPE

    def cosine_model():
        model = vpt()
        model.base_model.training_recipe = lambda: COOP_RECIPE.override(batch_size=2)
        return model

    run = ctx.fresh("cosine")
    trainer(run, cosine_model(), max_steps=4, warmup_epochs=0.0).train()
    trainer(run, cosine_model(), resume_from_checkpoint=True, max_steps=6, warmup_epochs=0.0).train()


def full_disk(ctx, monkeypatch):
    from peft_interp.training import checkpoint

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "optimizer.safetensors")

    monkeypatch.setattr(checkpoint, "save_file", no_space)
    trainer(ctx.fresh("full")).train()


def unwritable(ctx, monkeypatch):
    original = Path.write_bytes

    def refuse(self, data):
        if self.name.startswith(".write-test"):
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return original(self, data)

    monkeypatch.setattr(Path, "write_bytes", refuse)
    trainer(ctx.fresh("readonly")).train()


CASES_CHECKPOINTS = [
    pytest.param(resume_damaged(edit_state), ValueError, r"checkpoint-6: file trainer_state\.json does not match its SHA",
                 id="tampered-trainer-state"),
    pytest.param(resume_damaged(swap_optimizer), ValueError, r"checkpoint-6: file optimizer\.(json|safetensors) does not",
                 id="optimizer-of-another-checkpoint"),
    pytest.param(resume_damaged(add_file), ValueError, r"checkpoint-6: file notes\.txt is not in manifest\.json",
                 id="file-added-to-checkpoint"),
    pytest.param(resume_damaged(remove_manifest), ValueError, r"checkpoint-6 has no valid manifest\.json", id="no-manifests"),
    pytest.param(output_is_a_file, NotADirectoryError, r"output_dir .*file-\d+ is a file", id="output-dir-is-a-file"),
    pytest.param(adapter_with_user_files, FileExistsError, r"adapter holds files peft-interp did not write \(\['my_notes",
                 id="adapter-folder-with-user-files"),
    pytest.param(reuse_without_flag, FileExistsError, r"output_dir .* holds another training run .*--overwrite-output-dir",
                 id="output-dir-of-another-run"),
    pytest.param(resume_other_run, FileExistsError, r"--resume .*checkpoint-2 belongs to another run",
                 id="resume-checkpoint-of-another-run"),
    pytest.param(extend_a_cosine_run, ValueError, r"learning-rate schedule depends on the total", id="extend-cosine-run"),
    pytest.param(resume_damaged(lambda run: None, seed=1), ValueError, r"written with seed=0, this run has seed=1",
                 id="resume-other-seed"),
    pytest.param(resume_damaged(lambda run: None, max_steps=4), ValueError, r"at step 6, beyond this run's total of 4",
                 id="resume-beyond-total"),
]

CASES_FAULTS = [
    pytest.param(full_disk, OSError, r"could not write .*checkpoint-2: No space left on device \(file optimizer",
                 id="disk-full-while-saving"),
    pytest.param(unwritable, PermissionError, r"output_dir .*readonly-\d+ is not writable", id="output-dir-read-only"),
]


@pytest.mark.parametrize("call, error_type, pattern", CASES_TRAINING_ARGUMENTS + CASES_METHOD_CONFIG + CASES_MODEL_INPUTS
                         + CASES_DATA + CASES_WEIGHTS + CASES_CHECKPOINTS)  # fmt: skip
def test_bad_input_is_refused_with_a_message_naming_it(ctx, call, error_type, pattern):
    check_raises(lambda: call(ctx), error_type, pattern)


@pytest.mark.parametrize("call, error_type, pattern", CASES_FAULTS)
def test_fault_is_reported_naming_the_file(ctx, monkeypatch, call, error_type, pattern):
    check_raises(lambda: call(ctx, monkeypatch), error_type, pattern)


# ----------------------------------------------------------------------------------------------- command line
TRAIN = ["train", "--method", "vpt_deep"]
CASES_CLI_FLAGS = [  # argparse-level: exit status 2, "argument --flag: ..."
    pytest.param([*TRAIN, "--learning-rate", "nan"], r"argument --learning-rate: must be a finite number", id="lr-nan"),
    pytest.param([*TRAIN, "--max-grad-norm", "-1"], r"argument --max-grad-norm: must be > 0", id="grad-norm"),
    pytest.param([*TRAIN, "--warmup-epochs", "-5"], r"argument --warmup-epochs: must be >= 0", id="warmup"),
    pytest.param([*TRAIN, "--image-size", "0"], r"argument --image-size: must be >= 1", id="image-size-zero"),
    pytest.param([*TRAIN, "--shots", "0"], r"argument --shots: must be >= 1, got 0", id="shots-zero"),
    pytest.param([*TRAIN, "--logging-steps", "0"], r"argument --logging-steps: must be >= 1", id="logging-zero"),
    pytest.param([*TRAIN, "--save-total-limit", "-2"], r"argument --save-total-limit: must be >= 1, got -2",
                 id="save-limit-negative"),
    pytest.param([*TRAIN, "--save-total-limit", "few"], r"argument --save-total-limit: expected an integer",
                 id="save-limit-word"),
    pytest.param([*TRAIN, "--epochs", "0"], r"argument --epochs: must be > 0", id="epochs-zero"),
    pytest.param([*TRAIN, "--seed", "-1"], r"argument --seed: must be >= 0", id="seed-negative"),
    pytest.param([*TRAIN, "--batch-size", "0"], r"argument --batch-size: must be >= 1", id="batch-zero"),
    pytest.param([*TRAIN, "--num-workers", "-2"], r"argument --num-workers: must be >= 0", id="workers-negative"),
    pytest.param([*TRAIN, "--class-names", "cat", "Cat"], r"--class-names: class name 'Cat' is the same as 'cat'",
                 id="class-names-case-duplicate"),
    pytest.param(["explain", "--adapter", "x", "--num-images", "0"], r"argument --num-images: must be >= 1",
                 id="explain-num-images"),
    pytest.param(["demo", "--steps", "0"], r"argument --steps: must be >= 1", id="demo-steps"),
]


def config_file(ctx, text: str) -> str:
    path = ctx.fresh("config").with_suffix(".yaml")
    path.write_text(text)
    return str(path)


CASES_CLI_CONFIG = [  # --config values go through the same checks
    pytest.param(lambda ctx: ["train", "--config", str(ctx.root / "missing.yaml")], r"--config .*missing\.yaml: cannot be read",
                 id="config-missing"),
    pytest.param(lambda ctx: ["train", "--config", config_file(ctx, "method: [coop\n")], r"--config .*\.yaml: cannot be read as YAML",
                 id="config-malformed"),
    pytest.param(lambda ctx: ["train", "--config", config_file(ctx, "method: coop\nlearning_rate: .nan\n")],
                 r"argument --learning-rate: must be a finite number", id="config-lr-nan"),
    pytest.param(lambda ctx: ["train", "--config", config_file(ctx, "method: lora\n")],
                 r"argument --method: expected one of \['ivpt'", id="config-unknown-method"),
    pytest.param(lambda ctx: ["train", "--config", config_file(ctx, "method: coop\nmax_steps: ten\n")],
                 r"argument --max-steps: (invalid int value: 'ten'|must be an integer)", id="config-steps-word"),
    pytest.param(lambda ctx: ["train", "--config", config_file(ctx, "- method\n")], r"expected a mapping",
                 id="config-not-a-mapping"),
]


def write_json(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def malformed_config_adapter(ctx) -> list[str]:
    folder = ctx.copy(ctx.adapter)
    write_json(folder / "adapter_config.json", '{"peft_type": "PEFT_INTERP_VPT_DEEP", ')
    return ["evaluate", "--adapter", str(folder), "--dataset", str(ctx.images), "--split", "train"]


def lora_adapter(ctx) -> list[str]:
    folder = ctx.copy(ctx.adapter)
    write_json(folder / "adapter_config.json", '{"peft_type": "LORA"}')
    return ["evaluate", "--adapter", str(folder), "--dataset", str(ctx.images), "--split", "train"]


def truncated_adapter(ctx) -> list[str]:
    folder = damaged_adapter(ctx, truncate)
    return ["evaluate", "--adapter", str(folder), "--dataset", str(ctx.images), "--split", "train"]


def file_as_output(ctx) -> list[str]:
    path = ctx.fresh("out-file")
    path.write_text("x")
    return [*TRAIN, "--output-dir", str(path)]


CASES_CLI_ERRORS = [  # after parsing: exit status 1, one line "peft-interp COMMAND: error: ..."
    pytest.param(lambda ctx: [*TRAIN, "--model", "./no-such-model", "--output-dir", str(ctx.fresh())],
                 r"--model \./no-such-model: no such folder", id="model-folder-missing"),
    pytest.param(lambda ctx: [*TRAIN, "--model", "conceptworld-dinov3", "--output-dir", str(ctx.fresh())],
                 r"--model 'conceptworld-dinov3' is not one of the shipped models \(conceptworld-dinov2",
                 id="model-misspelt"),
    pytest.param(lambda ctx: [*TRAIN, "--model", str(ctx.images), "--output-dir", str(ctx.fresh())],
                 r"--model .*images: the folder has no config\.json", id="model-folder-without-config"),
    pytest.param(lambda ctx: [*TRAIN, "--model", str(ctx.root / "model"), "--image-size", "30", "--output-dir",
                              str(ctx.fresh())], r"--image-size 30 is not a multiple of the model's patch size 7",
                 id="image-size-not-multiple-of-patch"),
    pytest.param(lambda ctx: [*TRAIN, "--model", str(ctx.root / "model"), "--image-size", "70000", "--output-dir",
                              str(ctx.fresh())], r"--image-size 70000: one training step .* GiB", id="image-size-too-big"),
    pytest.param(lambda ctx: [*TRAIN, "--model", str(ctx.root / "model"), "--dataset", "imagefolder:/no/where",
                              "--output-dir", str(ctx.fresh())], r"dataset folder '/no/where' does not exist",
                 id="dataset-folder-missing"),
    pytest.param(file_as_output, r"output_dir .* is a file", id="output-dir-is-a-file"),
    pytest.param(lambda ctx: [*TRAIN, "--output-dir", str(ctx.run)], r"holds another training run", id="output-dir-taken"),
    pytest.param(lambda ctx: ["evaluate", "--adapter", str(ctx.root / "nope")], r"--adapter .*nope: no such folder",
                 id="adapter-missing"),
    pytest.param(malformed_config_adapter, r"adapter_config\.json is not valid JSON", id="adapter-config-malformed"),
    pytest.param(lora_adapter, r"adapter_config\.json: peft_type 'LORA' is not a peft-interp method",
                 id="adapter-not-ours"),
    pytest.param(truncated_adapter, r"adapter_model\.safetensors is not a valid safetensors file", id="adapter-truncated"),
    pytest.param(lambda ctx: ["evaluate", "--adapter", str(ctx.adapter), "--dataset", str(ctx.images), "--split", "train"],
                 r"--adapter .*vpt scores 2 classes but the dataset has 3", id="adapter-classes-mismatch"),
]


def assert_cli_fails(argv, code, pattern, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == code, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]  # progress bars may come before it
    assert re.search(pattern, last), f"{pattern!r} not in the last line: {last}"
    return last


@pytest.mark.parametrize("argv, pattern", CASES_CLI_FLAGS)
def test_bad_flag_is_refused_before_any_work(argv, pattern, capsys):
    assert_cli_fails(argv, 2, pattern, capsys)


@pytest.mark.parametrize("make_argv, pattern", CASES_CLI_CONFIG)
def test_bad_config_file_is_refused_naming_the_option(ctx, make_argv, pattern, capsys):
    assert_cli_fails(make_argv(ctx), 2, pattern, capsys)


@pytest.mark.parametrize("make_argv, pattern", CASES_CLI_ERRORS)
def test_bad_input_on_the_command_line_gives_one_line(ctx, make_argv, pattern, capsys):
    last = assert_cli_fails(make_argv(ctx), 1, pattern, capsys)
    assert last.startswith("peft-interp ") and "--debug shows the traceback" in last


def test_debug_shows_the_original_exception(ctx):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        main(["evaluate", "--debug", "--adapter", str(ctx.root / "nope")])


def test_ctrl_c_names_the_checkpoint_to_resume_from(ctx, monkeypatch, capsys):
    import peft_interp.cli as cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "train_command", interrupted)
    with pytest.raises(SystemExit) as exit_info:
        main([*TRAIN, "--output-dir", str(ctx.run)])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 130 and len(err.splitlines()) == 1
    assert f"resume from {ctx.run / 'checkpoint-6'}" in err and "--resume" in err


# ---------------------------------------------------------------------------------------------- battery size
ALL_CASES = (CASES_TRAINING_ARGUMENTS + CASES_METHOD_CONFIG + CASES_MODEL_INPUTS + CASES_DATA + CASES_WEIGHTS
             + CASES_CHECKPOINTS + CASES_FAULTS + CASES_CLI_FLAGS + CASES_CLI_CONFIG + CASES_CLI_ERRORS)  # fmt: skip


def test_the_battery_has_at_least_60_distinct_cases():
    ids = [case.id for case in ALL_CASES]
    assert len(ids) >= 60
    tables = [CASES_TRAINING_ARGUMENTS, CASES_METHOD_CONFIG, CASES_MODEL_INPUTS, CASES_DATA, CASES_WEIGHTS,
              CASES_CHECKPOINTS, CASES_FAULTS, CASES_CLI_FLAGS, CASES_CLI_CONFIG, CASES_CLI_ERRORS]  # fmt: skip
    assert all(len({case.id for case in table}) == len(table) for table in tables)


# ------------------------------------------------------------------------------------- one test per failure class
def test_class1_silent_wrong_result_an_adapter_under_another_methods_config_is_refused(ctx):
    """It used to load with a random head and prompts (PEFT only warned) and evaluate to some accuracy."""
    folder = ctx.copy(ctx.adapter)
    shutil.copy(ctx.ivpt / "adapter_config.json", folder / "adapter_config.json")
    with pytest.raises(ValueError, match="adapter_model.safetensors"):
        PeftModel.from_pretrained(make_backbone("dinov2"), folder)


def test_class2_files_a_new_run_keeps_what_it_did_not_write_and_prunes_only_its_own(ctx):
    """An output folder of another run used to have the new run's checkpoints pruned as they were written (the old,
    higher-numbered ones looked newer) and user files went with replaced folders; now the new run needs
    --overwrite-output-dir, keeps the other run's checkpoints and the user's files, and prunes only its own."""
    folder = ctx.copy(ctx.run)
    (folder / "notes.txt").write_text("mine")
    trainer(folder, max_steps=3, save_steps=1, save_total_limit=1, overwrite_output_dir=True).train()
    names = sorted(path.name for path in folder.iterdir() if path.name.startswith("checkpoint-"))
    assert names == ["checkpoint-3", "checkpoint-4", "checkpoint-6"]  # its newest one + the other run's two
    assert (folder / "notes.txt").read_text() == "mine"
    assert json.loads((folder / "checkpoint-3" / "manifest.json").read_text())["run_id"] != json.loads(
        (folder / "checkpoint-6" / "manifest.json").read_text())["run_id"]  # fmt: skip


def test_class2_a_finished_run_extends_to_more_steps_exactly_when_the_schedule_allows(ctx):
    """StepLR (the visual recipe) does not depend on the total: 4 steps then --resume to 6 is the 6-step run."""
    folder = ctx.fresh("extend")
    trainer(folder, max_steps=4).train()
    trainer(folder, max_steps=6, resume_from_checkpoint=True).train()
    extended, straight = load_file(folder / "adapter" / WEIGHTS), load_file(ctx.run / "adapter" / WEIGHTS)
    assert extended.keys() == straight.keys() and all(torch.equal(extended[k], straight[k]) for k in straight)


def test_class3_a_tampered_checkpoint_is_not_resumed(ctx):
    """A trainer_state.json with another step used to resume without complaint."""
    folder = ctx.copy(ctx.run)
    edit_state(folder)
    with pytest.raises(ValueError, match=r"checkpoint-6: file trainer_state\.json does not match"):
        trainer(folder, resume_from_checkpoint=True).train()


def test_class4_a_malformed_adapter_config_gives_one_line_naming_the_file(ctx, capsys):
    """It used to end in a JSONDecodeError traceback from inside PEFT."""
    last = assert_cli_fails(malformed_config_adapter(ctx), 1, r"adapter_config\.json is not valid JSON", capsys)
    assert str(ctx.root) in last


def test_class5_an_output_dir_that_is_a_file_fails_before_the_first_step(ctx):
    """It used to fail only at the first save, after the training."""
    path = ctx.fresh("file")
    path.write_text("x")
    model, calls = vpt(), []
    model.register_forward_hook(lambda *args: calls.append(1))
    with pytest.raises(NotADirectoryError, match=str(path)):
        trainer(path, model).train()
    assert calls == []


def test_class6_leftovers_are_recovered_and_the_loss_log_spans_a_resume(ctx):
    """A kill between the two renames used to leave .old-checkpoint-N for ever; a resumed run logged the mean of
    the steps after the resume only, not the uninterrupted run's window."""
    folder = ctx.fresh("resumed")
    folder.mkdir()
    shutil.copytree(ctx.run / "checkpoint-2", folder / ".old-checkpoint-2")  # killed between the renames
    trainer(folder, resume_from_checkpoint=True).train()
    assert not any(path.name.startswith((".old-", ".tmp-")) for path in folder.iterdir())
    other = ctx.fresh("hidden")
    other.mkdir()
    (other / ".tmp-mine").write_text("a user's file")  # not a leftover of ours: kept
    trainer(other, max_steps=2, overwrite_output_dir=True).train()
    assert (other / ".tmp-mine").read_text() == "a user's file"
    resumed = json.loads((folder / "checkpoint-6" / "trainer_state.json").read_text())["log_history"]
    straight = json.loads((ctx.run / "checkpoint-6" / "trainer_state.json").read_text())["log_history"]
    assert [(r["step"], r["loss"]) for r in resumed] == [(r["step"], r["loss"]) for r in straight]


def test_class7_the_model_card_escapes_names_and_quotes_the_snippet(ctx):
    """Class names reached the card as raw HTML and repo_id / base model went unquoted into Python literals."""
    import ast

    from peft_interp.sharing import save_for_hub

    model = vpt(class_names=["<script>alert(1)</script>", "<img src=x onerror=alert(1)>"])
    repo_id = 'me/x"); import os; os.system("echo pwned"); ("'
    model.peft_config["default"].base_model_name_or_path = repo_id
    card = (save_for_hub(model, ctx.fresh("card"), repo_id=repo_id) / "README.md").read_text()
    assert "<script>" not in card and "<img" not in card and "&lt;script&gt;" in card
    snippet = card.split("```python\n")[2].split("```")[0]
    calls = [node for node in ast.walk(ast.parse(snippet)) if isinstance(node, ast.Call)]
    literals = [arg.value for call in calls for arg in call.args if isinstance(arg, ast.Constant)]
    assert literals.count(repo_id) == 2 and "os" not in {n.id for n in ast.walk(ast.parse(snippet)) if isinstance(n, ast.Name)}
