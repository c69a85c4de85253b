"""Data checks and the protocol's splits, the command line end to end, the stock transformers.Trainer, and
multi-process training with ``accelerate launch``."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, Features
from datasets import Image as ImageFeature
from peft import PeftModel, get_peft_model
from PIL import Image
from safetensors.torch import load_file

from peft_interp import VPTDeepConfig
from peft_interp.cli import build_parser, main, parse_settings
from peft_interp.training.data import (
    Columns,
    ImageCollator,
    ImageTransform,
    base_novel_classes,
    dataset_class_names,
    few_shot,
    load_image_dataset,
    select_classes,
    validate_image_dataset,
)

from .test_training import IMAGE_SIZE, tiny_dinov2, write_imagefolder


def image_dataset(labels, names=("a", "b", "c")):
    images = [Image.new("RGB", (8, 8), (10 * i, 0, 0)) for i in range(len(labels))]
    features = Features({"image": ImageFeature(), "label": ClassLabel(names=list(names))})
    return Dataset.from_dict({"image": images, "label": labels}, features=features)


# ------------------------------------------------------------------------------------------------- data checks
def test_missing_label_column_names_the_column_and_the_choices():
    dataset = image_dataset([0, 1]).rename_column("label", "target")
    with pytest.raises(ValueError, match=r"label column 'label' not found.*\['image', 'target'\].*--label-column"):
        validate_image_dataset(dataset, Columns(), ["a", "b", "c"])


def test_labels_outside_the_class_list_are_refused():
    with pytest.raises(ValueError, match=r"ids in \[0, 2\] but there are 2 class names"):
        validate_image_dataset(image_dataset([0, 2]), Columns(), ["a", "b"])


def test_class_names_must_match_the_label_feature():
    with pytest.raises(ValueError, match="class_names has 2 names but label column 'label' has 3 classes"):
        dataset_class_names(image_dataset([0, 1]), Columns(), ["x", "y"])
    assert dataset_class_names(image_dataset([0, 1]), Columns()) == ["a", "b", "c"]


def test_an_unreadable_image_stops_before_training(tmp_path):
    root = write_imagefolder(tmp_path / "images", per_class=2)
    (root / "cat" / "broken.png").write_bytes(b"not a png")
    dataset = load_image_dataset(f"imagefolder:{root}", "train")
    with pytest.raises(ValueError, match=r"cannot be read"):
        validate_image_dataset(dataset, Columns(), ["cat", "dog"])


def test_few_shot_takes_k_per_class_reproducibly():
    labels = [0] * 5 + [1] * 3 + [2] * 6
    dataset = image_dataset(labels)
    picked = few_shot(dataset, 4, seed=1)
    assert sorted(picked["label"]) == [0] * 4 + [1] * 3 + [2] * 4  # class 1 has only 3
    assert few_shot(dataset, 4, seed=1)["image"] == picked["image"]
    assert few_shot(dataset, 4, seed=2)["image"] != picked["image"]


def test_base_to_novel_split_is_the_first_half_rounded_up():
    assert base_novel_classes(5) == ([0, 1, 2], [3, 4])
    assert base_novel_classes(4) == ([0, 1], [2, 3])
    novel = select_classes(image_dataset([0, 1, 2, 2, 1]), [2, 1])
    assert novel["label"] == [1, 0, 0, 1] and novel.features["label"].names == ["c", "b"]


def test_image_transform_normalises_and_centre_crops():
    transform = ImageTransform(4, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    image = Image.new("RGB", (8, 4), (255, 0, 128))
    pixels = transform(image)
    assert pixels.shape == (3, 4, 4)
    torch.testing.assert_close(pixels[:, 0, 0], torch.tensor([2.0, -2.0, (128 / 255 - 0.5) / 0.25]))
    batch = ImageCollator(transform)([{"image": image, "label": 2}])
    assert batch["labels"].tolist() == [2] and batch["pixel_values"].shape == (1, 3, 4, 4)


# ------------------------------------------------------------------------------------------------ command line
def test_config_file_gives_defaults_that_flags_override(tmp_path, capsys):
    from peft_interp.cli import _apply_config_file

    config = tmp_path / "run.yaml"
    config.write_text("method: coop\nmax_steps: 7\nbatch-size: 3\nmethod_settings: {num_context_tokens: 2}\n")
    args = _apply_config_file(build_parser(), ["train", "--config", str(config), "--max-steps", "9"])
    assert (args.method, args.max_steps, args.batch_size) == ("coop", 9, 3)
    assert args.method_settings == {"num_context_tokens": 2}
    config.write_text("max_stepz: 7\n")
    with pytest.raises(SystemExit) as exit_info:
        _apply_config_file(build_parser(), ["train", "--config", str(config)])
    assert exit_info.value.code == 2 and "unknown options ['max_stepz']" in capsys.readouterr().err


def test_set_values_are_parsed_and_unknown_fields_refused():
    assert parse_settings(["a=1", "b=[1, 2]", "c=a photo of a {}."]) == {"a": 1, "b": [1, 2], "c": "a photo of a {}."}
    from peft_interp.pipeline import method_config

    with pytest.raises(SystemExit, match="has no field"):
        method_config("coop", ["cat"], {"num_context_token": 4})


def test_train_evaluate_explain_from_the_command_line(tmp_path, capsys):
    model_dir, images = tmp_path / "model", write_imagefolder(tmp_path / "images")
    tiny_dinov2().save_pretrained(model_dir)
    common = ["--model", str(model_dir), "--dataset", f"imagefolder:{images}", "--split", "train"]
    main(["train", "--method", "vpt_deep", *common, "--max-steps", "3", "--batch-size", "4", "--output-dir",
          str(tmp_path / "run"), "--set", "num_prompt_tokens=3"])  # fmt: skip
    adapter = tmp_path / "run" / "adapter"
    assert json.loads((adapter / "adapter_config.json").read_text())["num_prompt_tokens"] == 3

    main(["evaluate", "--adapter", str(adapter), *common, "--output", str(tmp_path / "metrics.json")])
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    # an independent computation of the same accuracy
    model = PeftModel.from_pretrained(tiny_dinov2(), adapter).eval()
    dataset = load_image_dataset(f"imagefolder:{images}", "train")
    batch = ImageCollator(ImageTransform(IMAGE_SIZE))([dataset[i] for i in range(len(dataset))])
    with torch.no_grad():
        expected = (model(pixel_values=batch["pixel_values"]).logits.argmax(-1) == batch["labels"]).float().mean()
    assert metrics["accuracy"] == pytest.approx(100 * expected.item())  # percent

    main(["explain", "--adapter", str(adapter), *common, "--num-images", "2", "--output-dir", str(tmp_path / "ex")])
    page = (tmp_path / "ex" / "index.html").read_text()
    pictures = sorted(p.name for p in (tmp_path / "ex").glob("*.png"))
    assert len(pictures) == 2 and all(name in page for name in pictures)
    assert "true: cat" in page and "true: dog" in page  # sampled across the classes of a folder sorted by class

    wrong = int((model(pixel_values=batch["pixel_values"]).logits.argmax(-1) != batch["labels"]).sum())
    arguments = ["explain", "--adapter", str(adapter), *common, "--num-images", "12", "--misclassified",
                 "--output-dir", str(tmp_path / "wrong")]  # fmt: skip
    if wrong == 0:
        with pytest.raises(SystemExit, match="gets every image"):
            main(arguments)
    else:
        main(arguments)
        page = (tmp_path / "wrong" / "index.html").read_text()
        assert page.count('<figure class="wrong">') == wrong == len(list((tmp_path / "wrong").glob("*.png")))


def test_help_explains_the_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for command in ("demo", "train", "evaluate", "explain"):
        assert command in text


# --------------------------------------------------------------------------------------- transformers.Trainer
def test_the_stock_transformers_trainer_trains_our_models(tmp_path):
    """Our PeftModels are ordinary ``nn.Module``\\ s returning ``loss``: ``transformers.Trainer`` works with
    ``remove_unused_columns=False`` (the PeftModel forward takes ``**kwargs``) and a collator giving
    ``pixel_values`` and ``labels``."""
    from transformers import Trainer
    from transformers import TrainingArguments as HFTrainingArguments

    model = get_peft_model(tiny_dinov2(), VPTDeepConfig(num_classes=2, image_size=IMAGE_SIZE))
    before = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    generator = torch.Generator().manual_seed(0)
    rows = [{"pixel_values": torch.randn(3, IMAGE_SIZE, IMAGE_SIZE, generator=generator), "labels": i % 2}
            for i in range(8)]  # fmt: skip
    args = HFTrainingArguments(str(tmp_path), max_steps=3, per_device_train_batch_size=4, learning_rate=1e-2,
                               remove_unused_columns=False, report_to=[], use_cpu=True, save_strategy="no",
                               logging_steps=1)  # fmt: skip
    collate = lambda batch: {"pixel_values": torch.stack([r["pixel_values"] for r in batch]),
                             "labels": torch.tensor([r["labels"] for r in batch])}  # fmt: skip
    trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=collate)
    trainer.train()
    assert all(np.isfinite(log["loss"]) for log in trainer.state.log_history if "loss" in log)
    changed = [name for name, p in model.named_parameters() if p.requires_grad and not torch.equal(p, before[name])]
    assert sorted(changed) == sorted(before)  # every adapter parameter moved
    model.save_pretrained(tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(tiny_dinov2(), tmp_path / "adapter").eval()
    with torch.no_grad():
        x = rows[0]["pixel_values"][None]
        assert torch.equal(reloaded(pixel_values=x).logits, model.eval()(pixel_values=x).logits)


# ------------------------------------------------------------------------------------------ two CPU processes
def test_accelerate_launch_two_processes_equals_one_process_with_twice_the_batch(tmp_path):
    """DDP averages the two processes' gradients: 2 processes x batch 2 take the same steps as 1 x batch 4."""
    model_dir, images = tmp_path / "model", write_imagefolder(tmp_path / "images")
    tiny_dinov2().save_pretrained(model_dir)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    common = ["--method", "vpt_deep", "--model", str(model_dir), "--dataset", f"imagefolder:{images}", "--split",
              "train", "--max-steps", "3", "--no-augment"]  # fmt: skip (random augmentation differs per process)
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "peft_interp.cli"]  # fmt: skip
    subprocess.run([*launch, "train", *common, "--batch-size", "2", "--output-dir", str(tmp_path / "two")],
                   env=env, check=True, capture_output=True)  # fmt: skip
    subprocess.run([sys.executable, "-m", "peft_interp.cli", "train", *common, "--batch-size", "4", "--output-dir",
                    str(tmp_path / "one")], env=env, check=True, capture_output=True)  # fmt: skip
    two_state = json.loads((tmp_path / "two" / "checkpoint-3" / "trainer_state.json").read_text())
    assert two_state["num_processes"] == 2 and two_state["global_batch_size"] == 4
    two = load_file(Path(tmp_path / "two" / "adapter" / "adapter_model.safetensors"))
    one = load_file(Path(tmp_path / "one" / "adapter" / "adapter_model.safetensors"))
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-5, atol=1e-6)


def test_base_to_novel_from_the_command_line(tmp_path):
    from .tiny_models import IMAGE_SIZE as CLIP_SIZE
    from .tiny_models import make_clip

    model_dir = tmp_path / "clip"
    make_clip().save_pretrained(model_dir)
    images = write_imagefolder(tmp_path / "images", classes=("tree", "cat", "dog", "car"), per_class=2, size=CLIP_SIZE)
    common = ["--model", str(model_dir), "--dataset", f"imagefolder:{images}", "--split", "train"]
    main(["train", "--method", "coop", *common, "--classes", "base", "--max-steps", "2", "--batch-size", "2",
          "--output-dir", str(tmp_path / "run")])  # fmt: skip
    config = json.loads((tmp_path / "run" / "adapter" / "adapter_config.json").read_text())
    assert config["class_names"] == ["car", "cat"]  # label ids follow the sorted folder names; base = first half
    main(["evaluate", "--adapter", str(tmp_path / "run" / "adapter"), *common, "--base-to-novel", "--output",
          str(tmp_path / "metrics.json")])  # fmt: skip
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    base, novel = metrics["base"], metrics["novel"]
    assert metrics["hm"] == pytest.approx(2 * base * novel / (base + novel) if base + novel else 0.0)
