"""The trainer against independent expectations (not run-vs-run, where a bug present in both runs passes): the
learning rate of every optimiser step written out from the recipe, the data order of every epoch, and
checkpoints that appear only by an atomic rename of a complete folder."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
from peft import get_peft_model
from safetensors.torch import load_file
from transformers import Dinov2Config, Dinov2Model

from peft_interp import VPTDeepConfig
from peft_interp.training import InterpTrainer, TrainingArguments
from peft_interp.training import checkpoint as checkpoint_module
from peft_interp.training.checkpoint import latest_checkpoint, list_checkpoints, publish
from peft_interp.tuners.recipe import TrainingRecipe

IMAGE_SIZE = 16


def tiny_model():
    torch.manual_seed(0)
    config = Dinov2Config(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                          patch_size=8, image_size=IMAGE_SIZE)  # fmt: skip
    return get_peft_model(Dinov2Model(config), VPTDeepConfig(num_classes=2, image_size=IMAGE_SIZE, num_prompt_tokens=1))


def rows(count: int):
    generator = torch.Generator().manual_seed(1)
    return [{"pixel_values": torch.randn(3, IMAGE_SIZE, IMAGE_SIZE, generator=generator), "labels": torch.tensor(i % 2),
             "index": i} for i in range(count)]  # fmt: skip


class Recorder:
    """Collate function that records the example indices of every batch, and a step hook that records the learning
    rate of every parameter group when the optimiser step starts."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.learning_rates: list[list[float]] = []
        self.trainer: InterpTrainer | None = None

    def collate(self, batch):
        self.batches.append([row["index"] for row in batch])
        return {key: torch.stack([row[key] for row in batch]) for key in ("pixel_values", "labels")}

    def on_step(self, step: int) -> None:
        self.learning_rates.append([group["lr"] for group in self.trainer._optimizer.param_groups])


def run(tmp_path, count=8, recipe=None, two_groups=False, **arguments) -> tuple[Recorder, InterpTrainer]:
    model = tiny_model()
    tuner = model.base_model
    if recipe is not None:
        tuner.training_recipe = lambda: recipe
    if two_groups:  # prompts at the recipe's rate, the head at a tenth of it
        head = set(map(id, tuner.vpt_head.parameters()))
        params = [p for p in tuner.parameters() if p.requires_grad]
        base_lr = tuner.training_recipe().learning_rate
        tuner.optimizer_param_groups = lambda: [
            {"params": [p for p in params if id(p) not in head], "lr": base_lr},
            {"params": [p for p in params if id(p) in head], "lr": base_lr / 10},
        ]
    recorder = Recorder()
    tuner.on_train_step_begin = recorder.on_step
    args = TrainingArguments(str(tmp_path), report_to=None, logging_steps=1, **arguments)
    trainer = InterpTrainer(model, args, rows(count), recorder.collate, progress=False)
    recorder.trainer = trainer
    trainer.train()
    return recorder, trainer


def test_cosine_with_warm_up_at_every_step(tmp_path):
    """8 examples, batch 2: 4 steps per epoch, 3 epochs = 12 steps; one warm-up epoch at 3e-3, then a cosine from
    0.1 to 0 over the 8 remaining steps; a second group at a tenth of the rate follows the same factor."""
    recipe = TrainingRecipe(optimizer="sgd", learning_rate=0.1, scheduler="cosine", warmup_epochs=1,
                            warmup_learning_rate=3e-3, epochs=3, batch_size=2)  # fmt: skip
    recorder, _ = run(tmp_path, recipe=recipe, two_groups=True)
    expected = [3e-3] * 4 + [0.05 * (1 + math.cos(math.pi * k / 8)) for k in range(8)]
    assert len(recorder.learning_rates) == 12
    for step, (first, second) in enumerate(recorder.learning_rates):
        assert first == pytest.approx(expected[step], rel=1e-9), step
        assert second == pytest.approx(expected[step] / 10, rel=1e-9), step


def test_step_schedule_and_overridden_learning_rate_scale_every_group(tmp_path):
    """StepLR x0.3 every epoch (4 steps); ``learning_rate=0.2`` doubles the recipe's 0.1 for both groups."""
    recipe = TrainingRecipe(optimizer="adam", learning_rate=0.1, scheduler="step", step_size_epochs=1, gamma=0.3,
                            epochs=3, batch_size=2)  # fmt: skip
    recorder, _ = run(tmp_path, recipe=recipe, two_groups=True, learning_rate=0.2)
    for step, (first, second) in enumerate(recorder.learning_rates):
        assert first == pytest.approx(0.2 * 0.3 ** (step // 4), rel=1e-9), step
        assert second == pytest.approx(0.02 * 0.3 ** (step // 4), rel=1e-9), step


def test_warm_up_override_and_constant_schedule(tmp_path):
    recipe = TrainingRecipe(optimizer="sgd", learning_rate=0.05, scheduler="constant", warmup_learning_rate=1e-4,
                            epochs=2, batch_size=2)  # fmt: skip
    recorder, _ = run(tmp_path, recipe=recipe, warmup_epochs=0.5)  # 2 of the 4 steps of an epoch
    assert [lrs[0] for lrs in recorder.learning_rates] == pytest.approx([1e-4, 1e-4] + [0.05] * 6, rel=1e-9)


def test_every_epoch_is_a_new_permutation_fixed_by_the_seed(tmp_path):
    """9 examples, batch 2: 4 steps per epoch use 8 distinct examples; each epoch's order is a new permutation;
    the same seed gives the same batches, another seed other batches."""
    recipe = TrainingRecipe(optimizer="sgd", learning_rate=0.01, epochs=3, batch_size=2)
    recorder, trainer = run(tmp_path / "a", count=9, recipe=recipe, seed=7)
    assert len(recorder.batches) == 12 and all(len(batch) == 2 for batch in recorder.batches)
    epochs = [sum(recorder.batches[4 * e : 4 * e + 4], []) for e in range(3)]
    assert all(len(set(order)) == 8 for order in epochs)  # no example twice within an epoch
    assert len({tuple(order) for order in epochs}) == 3  # a new order every epoch
    for epoch, order in enumerate(epochs):  # the documented order: a function of (seed, epoch)
        assert order == trainer.epoch_order(epoch)[:8].tolist()

    again, _ = run(tmp_path / "b", count=9, recipe=recipe, seed=7)
    other, _ = run(tmp_path / "c", count=9, recipe=recipe, seed=8)
    assert again.batches == recorder.batches
    assert other.batches != recorder.batches


def test_accumulated_micro_batches_split_one_global_batch(tmp_path):
    """Accumulating 2 micro-batches of 2: 9 examples give 2 steps of 4 distinct examples per epoch."""
    recipe = TrainingRecipe(optimizer="sgd", learning_rate=0.01, epochs=2, batch_size=2)
    recorder, trainer = run(tmp_path, count=9, recipe=recipe, gradient_accumulation_steps=2)
    assert len(recorder.batches) == 8 and len(recorder.learning_rates) == 4
    for epoch in range(2):
        seen = sum(recorder.batches[4 * epoch : 4 * epoch + 4], [])
        assert seen == trainer.epoch_order(epoch)[:8].tolist()


def test_checkpoints_appear_only_by_renaming_a_complete_folder(tmp_path, monkeypatch):
    renames = []
    real_replace = os.replace

    def spy(source, target):
        source, target = Path(source), Path(target)
        if source.is_dir():  # folders only (small JSON files are published the same way)
            renames.append((source.name, target.name, sorted(p.name for p in source.iterdir()), target.exists()))
        real_replace(source, target)

    monkeypatch.setattr(checkpoint_module.os, "replace", spy)
    recipe = TrainingRecipe(optimizer="sgd", learning_rate=0.01, epochs=2, batch_size=2)
    run(tmp_path, recipe=recipe, save_steps=3, save_total_limit=None)
    complete = sorted([
        "adapter_config.json", "adapter_model.safetensors", "optimizer.json", "optimizer.safetensors",
        "rng_state_0.json", "rng_state_0.safetensors", "scheduler.json", "scheduler.safetensors",
        "trainer_state.json", "README.md",
    ])  # fmt: skip
    assert [(source, target) for source, target, _, _ in renames] == [
        (".tmp-checkpoint-3", "checkpoint-3"), (".tmp-checkpoint-6", "checkpoint-6"),
        (".tmp-checkpoint-8", "checkpoint-8"), (".tmp-adapter", "adapter"),
    ]  # fmt: skip
    for source, _, files, target_existed in renames[:3]:
        assert set(complete) <= set(files), source  # (plus whatever else a checkpoint records, e.g. a manifest)
        assert not target_existed
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-3", "checkpoint-6", "checkpoint-8"]
    assert not list(tmp_path.glob(".tmp-*"))


def test_a_save_that_fails_half_way_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    real_save_state = checkpoint_module.save_state
    calls = {"scheduler": 0}

    def failing(state, folder, name):
        if name == "scheduler":
            calls["scheduler"] += 1
            if calls["scheduler"] == 2:
                raise OSError("disk full")
        real_save_state(state, folder, name)

    monkeypatch.setattr("peft_interp.training.trainer.save_state", failing)
    recipe = TrainingRecipe(optimizer="sgd", learning_rate=0.01, epochs=2, batch_size=2)
    with pytest.raises(OSError, match="disk full"):
        run(tmp_path, recipe=recipe, save_steps=2)
    assert latest_checkpoint(tmp_path).name == "checkpoint-2"
    assert not (tmp_path / "checkpoint-4").exists()
    monkeypatch.setattr("peft_interp.training.trainer.save_state", real_save_state)
    recorder, _ = run(tmp_path, recipe=recipe, save_steps=2, resume_from_checkpoint=True)
    assert len(recorder.learning_rates) == 6  # resumed after step 2 of 8
    assert not (tmp_path / ".tmp-checkpoint-4").exists()  # leftovers of the failed save are removed
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-6", "checkpoint-8"]  # save_total_limit 2


def test_republishing_a_step_replaces_it_whole(tmp_path):
    final = tmp_path / "checkpoint-5"
    for version in ("old", "new"):
        staging = tmp_path / ".tmp-checkpoint-5"
        staging.mkdir()
        (staging / "trainer_state.json").write_text(version)
        (staging / f"{version}.txt").write_text(version)
        publish(staging, final)
    assert sorted(p.name for p in final.iterdir()) == ["new.txt", "trainer_state.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-5"]


def test_logged_losses_are_window_means_and_the_final_adapter_is_the_trained_one(tmp_path):
    """Logging every 3 of 8 steps: records at steps 3, 6 and 8, each the mean of its window's step losses (written
    down from the model's own forward); the returned loss is the last window's; ``adapter/`` holds the weights the
    model ends with."""
    recipe = TrainingRecipe(optimizer="sgd", learning_rate=0.05, epochs=2, batch_size=2)
    model = tiny_model()
    tuner = model.base_model
    tuner.training_recipe = lambda: recipe
    losses = []
    forward = tuner.forward

    def recording_forward(*args, **kwargs):
        output = forward(*args, **kwargs)
        losses.append(output.loss.item())
        return output

    tuner.forward = recording_forward
    recorder = Recorder()
    args = TrainingArguments(str(tmp_path), report_to=None, logging_steps=3)
    trainer = InterpTrainer(model, args, rows(8), recorder.collate, progress=False)
    result = trainer.train()
    state = json.loads((tmp_path / "checkpoint-8" / "trainer_state.json").read_text())
    records = state["log_history"]
    assert [record["step"] for record in records] == [3, 6, 8]
    windows = [losses[0:3], losses[3:6], losses[6:8]]
    for record, window in zip(records, windows):
        assert record["loss"] == pytest.approx(sum(window) / len(window), rel=1e-6)
    assert result.loss == pytest.approx(sum(losses[6:8]) / 2, rel=1e-6) and result.steps == 8
    assert state["step"] == 8 and state["steps_per_epoch"] == 4 and state["total_steps"] == 8
    saved = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    trained = {name: p for name, p in model.named_parameters() if p.requires_grad}
    assert len(saved) == len(trained)
    for name, param in trained.items():
        assert torch.equal(saved[name.replace(".default", "")], param.detach()), name


def test_a_run_that_is_all_warm_up_ends_without_dividing_by_zero():
    """One epoch of CoOp's protocol is all warm-up: the scheduler's last call (step == total) must not divide by an
    empty cosine span."""
    recipe = TrainingRecipe(optimizer="sgd", learning_rate=0.1, scheduler="cosine", warmup_epochs=1, epochs=1)
    assert recipe.lr_factor(4, 4, 4) == 1.0
    assert recipe.lr_factor(3, 4, 4) == pytest.approx(recipe.warmup_learning_rate / 0.1)
