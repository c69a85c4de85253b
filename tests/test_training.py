"""The trainer: recipes, atomic checkpoints, exact resume (with a real kill), gradient accumulation, data checks."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from peft import get_peft_model
from PIL import Image
from safetensors.torch import load_file
from transformers import Dinov2Config, Dinov2Model

from peft_interp import IVPTConfig, VPTDeepConfig
from peft_interp.training import InterpTrainer, TrainingArguments
from peft_interp.training.checkpoint import (
    join_tensors,
    latest_checkpoint,
    load_state,
    save_state,
    split_tensors,
    write_manifest,
)
from peft_interp.tuners.recipe import COOP_RECIPE, IVPT_RECIPE, TrainingRecipe

IMAGE_SIZE = 32


def tiny_dinov2(seed: int = 0) -> Dinov2Model:
    torch.manual_seed(seed)
    config = Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                          patch_size=8, image_size=IMAGE_SIZE)  # fmt: skip
    return Dinov2Model(config)


def tensor_rows(count: int = 8, num_classes: int = 2):
    generator = torch.Generator().manual_seed(1)
    return [{"pixel_values": torch.randn(3, IMAGE_SIZE, IMAGE_SIZE, generator=generator),
             "labels": torch.tensor(i % num_classes)} for i in range(count)]  # fmt: skip


def stack(rows):
    return {key: torch.stack([row[key] for row in rows]) for key in rows[0]}


def train_tiny(output_dir, config_cls=IVPTConfig, **overrides):
    model = get_peft_model(tiny_dinov2(), config_cls(num_classes=2, image_size=IMAGE_SIZE))
    args = TrainingArguments(str(output_dir), **{"max_steps": 6, "batch_size": 2, "save_steps": 2, **overrides})
    InterpTrainer(model, args, tensor_rows(), stack, progress=False).train()
    return load_file(output_dir / "adapter" / "adapter_model.safetensors")


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        assert torch.equal(value, b[key]), key


# ------------------------------------------------------------------------------------------------- recipes
def test_coop_recipe_warms_up_at_constant_lr_then_follows_a_cosine():
    # 10 steps per epoch, 50 steps: 10 warm-up steps at 1e-5 (factor 1e-5 / 2e-3), then a cosine over 40 steps.
    factors = [COOP_RECIPE.lr_factor(step, 10, 50) for step in range(50)]
    assert factors[:10] == [pytest.approx(0.005)] * 10
    assert factors[10] == pytest.approx(1.0)
    assert factors[30] == pytest.approx(0.5)  # half-way through the cosine: (1 + cos(pi / 2)) / 2
    assert factors[49] == pytest.approx(0.5 * (1 + np.cos(np.pi * 39 / 40)))


def test_ivpt_recipe_halves_the_lr_every_four_epochs():
    factors = [IVPT_RECIPE.lr_factor(step, 10, 200) for step in (0, 39, 40, 79, 80)]
    assert factors == [1.0, 1.0, 0.5, 0.5, 0.25]


def test_recipe_errors_name_the_field():
    with pytest.raises(ValueError, match="optimizer"):
        TrainingRecipe(optimizer="lbfgs")
    with pytest.raises(ValueError, match="mixed_precision"):
        TrainingArguments("out", mixed_precision="fp8")


def test_trainer_builds_the_methods_optimiser_and_param_groups(tmp_path):
    model = get_peft_model(tiny_dinov2(), IVPTConfig(num_classes=2, image_size=IMAGE_SIZE))
    trainer = InterpTrainer(model, TrainingArguments(str(tmp_path), learning_rate=2e-2, batch_size=2), tensor_rows(), stack)
    optimizer = trainer.create_optimizer()
    assert isinstance(optimizer, torch.optim.Adam)
    # IVPT's two groups, both scaled by 2e-2 / 1e-2.
    assert [group["lr"] for group in optimizer.param_groups] == pytest.approx([2e-2, 4e-4])
    grouped = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert grouped == {id(p) for p in model.parameters() if p.requires_grad}


# ---------------------------------------------------------------------------------------------- checkpoints
def test_optimizer_state_round_trips_through_safetensors_and_json(tmp_path):
    param = torch.nn.Parameter(torch.randn(3, 4))
    optimizer = torch.optim.Adam([param], lr=0.1, betas=(0.8, 0.9))
    param.grad = torch.randn(3, 4)
    optimizer.step()
    save_state(optimizer.state_dict(), tmp_path, "optimizer")
    restored = load_state(tmp_path, "optimizer")
    original = optimizer.state_dict()
    assert restored["param_groups"] == original["param_groups"]  # betas stay a tuple
    for key in ("step", "exp_avg", "exp_avg_sq"):
        assert torch.equal(restored["state"][0][key], original["state"][0][key])


def test_split_tensors_rejects_objects_it_cannot_store():
    with pytest.raises(TypeError, match="object"):
        split_tensors({"a": object()})
    structure, tensors = split_tensors({1: [torch.ones(2), ("x", None)]})
    assert join_tensors(json.loads(json.dumps(structure)), tensors)[1][1] == ("x", None)


def test_unfinished_checkpoints_are_ignored(tmp_path):
    (tmp_path / "checkpoint-4").mkdir()
    (tmp_path / "checkpoint-4" / "trainer_state.json").write_text("{}")
    write_manifest(tmp_path / "checkpoint-4", 4, "run")
    (tmp_path / ".tmp-checkpoint-8").mkdir()  # a save interrupted before its rename
    (tmp_path / "checkpoint-6").mkdir()  # no manifest.json (written last): not complete
    (tmp_path / "checkpoint-6" / "trainer_state.json").write_text("{}")
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-4"


def test_resume_from_a_checkpoint_gives_bit_identical_weights(tmp_path):
    reference = train_tiny(tmp_path / "full")
    resumed_dir = tmp_path / "resumed"
    resumed_dir.mkdir()
    os.rename(tmp_path / "full" / "checkpoint-4", resumed_dir / "checkpoint-4")
    resumed = train_tiny(resumed_dir, resume_from_checkpoint=True)
    assert_same_weights(reference, resumed)
    # and a run with no checkpoint to resume from is not the same as one that starts at step 4
    assert not all(torch.equal(reference[k], train_tiny(tmp_path / "short", max_steps=2)[k]) for k in reference)


def test_resume_refuses_a_checkpoint_of_another_run(tmp_path):
    train_tiny(tmp_path)
    with pytest.raises(ValueError, match="batch_size"):
        train_tiny(tmp_path, batch_size=1, resume_from_checkpoint=True)


def test_gradient_accumulation_matches_one_large_batch(tmp_path):
    # VPT-deep's loss is a mean over the batch, so 2 x 2 accumulated equals one batch of 4 (same examples).
    large = train_tiny(tmp_path / "large", VPTDeepConfig, batch_size=4, max_steps=3)
    accumulated = train_tiny(tmp_path / "accumulated", VPTDeepConfig, batch_size=2, gradient_accumulation_steps=2,
                             max_steps=3)  # fmt: skip
    for key in large:
        torch.testing.assert_close(large[key], accumulated[key], rtol=1e-5, atol=1e-6)


def test_too_small_a_dataset_is_a_clear_error(tmp_path):
    model = get_peft_model(tiny_dinov2(), VPTDeepConfig(num_classes=2, image_size=IMAGE_SIZE))
    trainer = InterpTrainer(model, TrainingArguments(str(tmp_path), batch_size=16), tensor_rows(), stack)
    with pytest.raises(ValueError, match="fewer than one global batch of 16"):
        trainer.train()


# ----------------------------------------------------------------------------------- a real kill, via the CLI
def write_imagefolder(root, classes=("cat", "dog"), per_class=6, size=IMAGE_SIZE):
    rng = np.random.default_rng(0)
    for index, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
            pixels[..., index % 3] = 255  # a class-coloured channel
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def cli_inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    tiny_dinov2().save_pretrained(root / "model")
    return root / "model", write_imagefolder(root / "images")


def cli(model_dir, data_dir, output_dir, *extra):
    return [sys.executable, "-m", "peft_interp.cli", "train", "--method", "ivpt", "--model", str(model_dir),
            "--dataset", f"imagefolder:{data_dir}", "--split", "train", "--batch-size", "2", "--max-steps", "60",
            "--save-steps", "5", "--output-dir", str(output_dir), *extra]  # fmt: skip


def test_a_run_killed_mid_way_and_resumed_ends_with_the_same_adapter(cli_inputs, tmp_path):
    model_dir, data_dir = cli_inputs
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    from peft_interp.cli import main

    main(cli(model_dir, data_dir, tmp_path / "full")[3:])  # the uninterrupted run, in this process (1 thread too)

    killed = tmp_path / "killed"
    process = subprocess.Popen(cli(model_dir, data_dir, killed), env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 120
    while not (killed / "checkpoint-10" / "trainer_state.json").exists():
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before its checkpoint"
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "adapter").exists(), "the kill came too late: the run had finished"

    subprocess.run(cli(model_dir, data_dir, killed, "--resume"), env=env, check=True, capture_output=True)
    assert_same_weights(load_file(tmp_path / "full" / "adapter" / "adapter_model.safetensors"),
                        load_file(killed / "adapter" / "adapter_model.safetensors"))  # fmt: skip
    state = json.loads((killed / "checkpoint-60" / "trainer_state.json").read_text())
    assert state["step"] == 60 and state["log_history"][-1]["step"] == 60


def test_bf16_mixed_precision_trains_and_keeps_fp32_adapter_weights(tmp_path):
    from accelerate.state import AcceleratorState
    from peft import get_peft_model_state_dict

    AcceleratorState._reset_state()  # Accelerate keeps one mixed-precision setting per process
    try:
        weights = train_tiny(tmp_path, VPTDeepConfig, mixed_precision="bf16", max_steps=2, save_steps=0)
    finally:
        AcceleratorState._reset_state()
    initial = get_peft_model_state_dict(get_peft_model(tiny_dinov2(), VPTDeepConfig(num_classes=2, image_size=IMAGE_SIZE)))
    assert weights.keys() == initial.keys()
    assert all(value.dtype == torch.float32 for value in weights.values())
    assert all(not torch.equal(value, initial[key]) for key, value in weights.items())  # everything trained
